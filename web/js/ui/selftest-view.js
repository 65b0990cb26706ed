// ui/selftest-view.js — the Self-test tab: fetches /ice-config, runs selftest.js, and fills the
// server list, the candidate table (as candidates trickle in) and the plain-words verdict.

import { api } from '../api.js';
import { runSelfTest, parseIceUrl, hostPort } from '../selftest.js';
import { $, el } from './dom.js';

const WORD = { reachable: 'reachable', unreachable: 'not reachable', 'not-offered': 'not offered by this server' };

export function initSelftestView() {
  const run = $('#selftest-run');
  run.addEventListener('click', async () => {
    run.disabled = true;
    run.textContent = 'Testing…';
    const body = $('#selftest-table tbody');
    body.replaceChildren();
    const verdictBox = $('#selftest-verdict');
    verdictBox.hidden = true;
    verdictBox.dataset.done = 'false';
    const list = $('#selftest-servers');
    try {
      const cfg = await api.iceConfig();
      const rows = new Map();
      list.replaceChildren();
      for (const s of cfg.iceServers || []) {
        for (const url of [].concat(s.urls)) {
          const p = parseIceUrl(url);
          const li = el('li', { 'data-testid': 'selftest-server', dataset: { url, kind: p.kind, transport: p.transport } },
            el('span', { class: 'state testing', text: 'testing…' }), el('b', { text: p.label }), el('code', { text: url }), el('span', { class: 'detail' }));
          rows.set(url, li);
          list.append(li);
        }
      }
      if (!rows.size) list.append(el('li', { text: 'This server lists no ICE servers (TURN is disabled and none are configured).' }));
      const started = performance.now();
      const { results, verdict } = await runSelfTest(cfg, {
        onCandidate: (server, c) => {
          body.append(el('tr', { 'data-testid': 'candidate-row', dataset: { type: c.type, protocol: c.protocol, family: c.family, server: server.url } },
            el('td', { text: `${((performance.now() - started) / 1000).toFixed(2)} s` }),
            el('td', { text: server.label }),
            el('td', { text: c.type }),
            el('td', { text: c.type === 'relay' && c.relayProtocol ? `${c.protocol} (to TURN: ${c.relayProtocol})` : c.protocol }),
            el('td', { class: 'addr', text: hostPort(c.address, c.port) }),
            el('td', { text: c.family }),
            el('td', { class: 'addr', text: c.relatedAddress ? hostPort(c.relatedAddress, c.relatedPort) : '' })));
        },
      });
      for (const r of results) {
        const li = rows.get(r.url);
        if (!li) continue;
        const st = li.querySelector('.state');
        st.className = `state ${r.ok ? 'reachable' : 'unreachable'}`;
        st.textContent = r.ok ? 'reachable' : 'not reachable';
        li.dataset.ok = String(r.ok);
        li.querySelector('.detail').textContent = `${r.detail} (${r.ms} ms)`;
      }
      const item = (label, key) => el('li', { class: verdict[key], 'data-testid': `verdict-${key}`, dataset: { status: verdict[key] } }, `${label}: ${WORD[verdict[key]]}`);
      verdictBox.replaceChildren(el('p', { text: verdict.summary }),
        el('ul', {}, item('STUN', 'stun'), item('TURN UDP', 'turnUdp'), item('TURN TCP', 'turnTcp'), item('TURN TLS', 'turnTls')));
      verdictBox.className = `verdict ${verdict.ok ? 'ok' : 'bad'}`;
      for (const k of ['stun', 'turnUdp', 'turnTcp', 'turnTls']) verdictBox.dataset[k] = verdict[k];
      verdictBox.dataset.done = 'true';
      verdictBox.hidden = false;
    } catch (err) {
      verdictBox.replaceChildren(el('p', { class: 'error', text: `The test could not run: ${err.message}` }));
      verdictBox.className = 'verdict bad';
      verdictBox.dataset.done = 'true';
      verdictBox.hidden = false;
    } finally {
      run.disabled = false;
      run.textContent = 'Run again';
    }
  });
}
