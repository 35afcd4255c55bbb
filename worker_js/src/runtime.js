// Pyodide and the tabgrid runtime wheel, loaded from the coordinator's own origin.

export async function loadRuntime({ indexURL, lockFileURL }) {
  const { loadPyodide } = await import(/* @vite-ignore */ new URL('pyodide.mjs', indexURL).href);
  const pyodide = await loadPyodide({ indexURL, lockFileURL, fullStdLib: false });
  await pyodide.loadPackage('tabgrid-runtime', { messageCallback: () => {} });
  return new Runtime(pyodide, pyodide.pyimport('tabgrid.runtime.browser'));
}

class Runtime {
  constructor(pyodide, browser) {
    this.pyodide = pyodide;
    this.browser = browser;
  }

  // {outputs: [{name, dtype, shape, data}], ms} or {error, ms}; never throws for a kernel's
  // own failure, only if Python itself is broken.
  run(kernel, params, inputs) {
    return this.browser.run(kernel, JSON.stringify(params), inputs);
  }

  async adapter() {
    return await this.browser.adapter();
  }

  loseDevice() {
    return this.browser.lose_device();
  }
}
