"""The browser worker's unacknowledged results, run under Node: worker_js/src/unacked.js keeps
the same bounds and order as the native worker's (test_unacked.py), and worker.js sends them
again after a reconnect (js/tab_resends.mjs, with a fake WebSocket and a fake Pyodide)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "worker_js" / "src"
MODULE = SRC / "unacked.js"
TAB = Path(__file__).resolve().parent / "js" / "tab_resends.mjs"
# Pyodide as runtime.js loads it, reduced to a checksum kernel that counts its runs.
FAKE_PYODIDE = """
const browser = {
  async run(kernel, params, inputs) {
    globalThis.__runs.push(kernel);
    await globalThis.__hold; // a test may hold the unit computing
    const data = new Uint8Array([1, 2, 3, 4]);
    return { outputs: [{ name: 'digest', dtype: 'uint8', shape: [4], data }], ms: 1 };
  },
};
export async function loadPyodide() {
  return { loadPackage: async () => {}, pyimport: () => browser };
}
"""

SCRIPT = """
const { Unacked, inMessages, maxResults, MAX_RESULTS } = await import(process.argv[1]);
const item = (lease, error = 'boom') => ({ lease, error });
const leases = (kept) => kept.items().map((i) => i.lease);
const out = {};
const kept = new Unacked();
out.first = kept.add([item(3), item(1), item(2)]);
out.order = leases(kept);
out.forgot = kept.forget([1, 99]);
kept.add([item(3, 'again')]);
out.replaced = kept.items().map((i) => [i.lease, i.error]);
out.bytes = kept.bytes === kept.items().reduce((n, i) => n + JSON.stringify(i).length, 0);
const byCount = new Unacked(3);
out.droppedByCount = byCount.add([0, 1, 2, 3, 4].map((n) => item(n)));
out.leftByCount = leases(byCount);
const one = JSON.stringify(item(0, 'x'.repeat(100))).length;
const byBytes = new Unacked(100, 2 * one);
out.droppedByBytes = byBytes.add([0, 1, 2].map((n) => item(n, 'x'.repeat(100))));
out.tooLargeAlone = byBytes.add([item(9, 'x'.repeat(3000))]);
out.emptyAfter = [byBytes.size, byBytes.bytes];
const { messages, tooBig } = inMessages([item(1), item(2, 'x'.repeat(500)), item(3)], 300);
out.messages = messages.map((m) => m.map((i) => i.lease));
out.tooBig = tooBig;
const fits = inMessages([1, 2, 3, 4].map((n) => item(n)), 64 + 2 * 27);
out.packed = fits.messages.map((m) => m.map((i) => i.lease));
out.maxResults = MAX_RESULTS;
const byItems = inMessages([1, 2, 3, 4, 5].map((n) => item(n)), 1 << 20, 2);
out.byItems = byItems.messages.map((m) => m.map((i) => i.lease));
out.welcomeCounts = [maxResults({ max_results: 7 }), maxResults({})];
try { new Unacked(0); } catch (e) { out.refused = e instanceof RangeError; }
console.log(JSON.stringify(out));
"""


def node(*args: str) -> dict:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("Node.js is not installed (./dev bundle installs it)")
    run = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_browser_worker_keeps_unacknowledged_results_as_the_native_one() -> None:
    out = node("--input-type=module", "-e", SCRIPT, MODULE.as_uri())
    assert out["first"] == [] and out["order"] == [3, 1, 2] and out["forgot"] == 1
    assert out["replaced"] == [[2, "boom"], [3, "again"]] and out["bytes"] is True
    assert out["droppedByCount"] == [0, 1] and out["leftByCount"] == [2, 3, 4]
    assert out["droppedByBytes"] == [0] and out["tooLargeAlone"] == [1, 2, 9]
    assert out["emptyAfter"] == [0, 0]
    assert out["messages"] == [[1, 3]] and out["tooBig"] == [2]
    assert out["packed"] == [[1, 2], [3, 4]], "each message under the bound, in order"
    assert out["maxResults"] == 128 and out["refused"] is True
    assert out["byItems"] == [[1, 2], [3, 4], [5]], "within the coordinator's count"
    assert out["welcomeCounts"] == [7, 128], "a welcome that says nothing: the default"


def test_the_tab_sends_unacknowledged_results_again_after_a_reconnect(tmp_path: Path) -> None:
    (tmp_path / "pyodide.mjs").write_text(FAKE_PYODIDE)
    out = node(str(TAB), (SRC / "worker.js").as_uri(), tmp_path.as_uri() + "/")
    assert out["helloAcks"] is True and out["sent"] == [7]
    assert out["afterWelcome"][:3] == ["hello", "result", "ready"], "the resend comes first"
    assert out["resent"] == [7] and out["sameResult"] is True
    assert out["afterAck"] == ["hello", "ready"], "an acknowledged result is forgotten"
    assert out["runs"] == 1, "the unit was computed once"
    assert out["afterCallBack"] == ["hello", "ready", "ready"], "no result for a called-back unit"
    assert any("unit 108 of job 1 was called back" in line for line in out["logs"])
    assert any("sending 1 unacknowledged results again" in line for line in out["logs"])
    assert out["resentOneByOne"] == [[9], [10]], "one a message, as that welcome said"
