// ui/signin-view.js — the sign-in page (account form and token form) and the who-am-I / sign-out
// part of the top bar. Talks to `session`; shows why the user was signed out when there is a reason.

import { session } from '../session.js';
import { $ } from './dom.js';

function showError(form, message) {
  const p = form.querySelector('.error');
  p.textContent = message || '';
  p.hidden = !message;
}

export function initSignin() {
  const login = $('#login-form');
  login.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(login, '');
    const btn = login.querySelector('button');
    btn.disabled = true;
    try {
      await session.login($('#login-user').value.trim(), $('#login-pass').value);
      $('#login-pass').value = '';
    } catch (err) {
      showError(login, err.status === 401 ? 'Wrong username or password.' : err.status === 429 ? 'Too many attempts: wait a minute and try again.' : err.message);
    } finally {
      btn.disabled = false;
    }
  });
  const tokenForm = $('#token-form');
  tokenForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(tokenForm, '');
    try {
      await session.useToken($('#token-input').value);
      $('#token-input').value = '';
    } catch (err) {
      showError(tokenForm, err.code === 'token_expired' ? 'This token has expired. Ask for a new one.'
        : err.status === 401 ? 'The server does not accept this token.' : err.message);
    }
  });
  $('#signout').addEventListener('click', () => session.signOut(null));
}

/** Shows the sign-in page (with an optional reason) or the app for `user`. */
export function renderSignedIn(user, reason) {
  $('#signin').hidden = !!user;
  $('#app').hidden = !user;
  $('#signout').hidden = !user;
  const who = $('#whoami');
  who.hidden = !user;
  who.textContent = '';
  if (user) {
    const name = document.createElement('b');
    name.textContent = user.name || user.id;
    who.append('Signed in as ', name, user.name && user.name !== user.id ? ` (${user.id})` : '', user.admin ? ' · admin' : '');
    who.dataset.userId = user.id;
    $('#my-id').textContent = user.id;
  }
  const r = $('#signin-reason');
  r.textContent = reason || '';
  r.hidden = !reason;
  if (!user) (reason ? r : $('#login-user')).focus?.();
}
