// Modal <dialog>s for the ban reason and for confirmations (not window.prompt/confirm: those
// block the page and cannot be styled or driven by tests).

import { $ } from './dom.js';

function ask(dialog, form, cancel, onOpen, read) {
  return new Promise((resolve) => {
    let answer = null;
    const submit = (event) => {
      event.preventDefault();
      answer = read();
      dialog.close();
    };
    const abort = () => dialog.close();
    const closed = () => {
      form.removeEventListener('submit', submit);
      cancel.removeEventListener('click', abort);
      dialog.removeEventListener('close', closed);
      resolve(answer);
    };
    form.addEventListener('submit', submit);
    cancel.addEventListener('click', abort);
    dialog.addEventListener('close', closed);
    onOpen();
    dialog.showModal();
  });
}

// Resolves to true when confirmed, false otherwise.
export async function confirmAction(text, okLabel = 'OK') {
  const answer = await ask(
    $('confirm-dialog'),
    $('confirm-form'),
    $('confirm-cancel'),
    () => {
      $('confirm-text').textContent = text;
      $('confirm-ok').textContent = okLabel;
      $('confirm-ok').focus();
    },
    () => true,
  );
  return answer === true;
}

// Resolves to the reason, or null when cancelled.
export function askBanReason(workerId) {
  const input = $('ban-reason');
  const check = () => input.setCustomValidity(input.value.trim() ? '' : 'Give a reason.');
  input.addEventListener('input', check);
  return ask(
    $('ban-dialog'),
    $('ban-form'),
    $('ban-cancel'),
    () => {
      $('ban-worker').textContent = workerId;
      input.value = '';
      check();
    },
    () => input.value.trim(),
  ).finally(() => input.removeEventListener('input', check));
}
