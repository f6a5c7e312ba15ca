// Live updates for the console's pages: everything else works without JavaScript.
// A page whose <main> has data-live follows its namespace's status events (Server-Sent
// Events): rows of backups and restores change in place, and sections marked data-section
// are fetched again when an event names something the page does not show yet.
(function () {
  'use strict';
  var main = document.querySelector('main[data-live]');
  var state = document.getElementById('live-state');
  if (!main || !window.EventSource) { return; }

  // The last event of each backup and restore, applied again after a section is reloaded:
  // an event is newer than the status it leads to.
  var latest = {};
  var pending = null;
  var refetches = 0;

  function setState(s, text) {
    if (!state) { return; }
    state.dataset.state = s;
    state.textContent = 'Live updates: ' + text;
  }

  function word(phase) {
    return phase ? phase.charAt(0).toUpperCase() + phase.slice(1) : '';
  }

  // A restore's event message is "<Phase>: <message>".
  function restorePhase(ev) {
    var m = /^([A-Za-z]+): ([\s\S]*)$/.exec(ev.message || '');
    return m ? { phase: m[1], message: m[2] } : { phase: word(ev.phase), message: ev.message || '' };
  }

  function text(row, cls, value) {
    var el = row.querySelector('.' + cls);
    if (el) { el.textContent = value; }
  }

  // shown records when the page first showed each backup's or restore's phase, kept across
  // reloads of its section: data-updated-at on the row says it (the console's browser test
  // measures the delay from a status event to the page with it).
  var shown = {};
  function stamp(row, key, phase) {
    var s = shown[key];
    if (!s || s.phase !== phase) { s = shown[key] = { phase: phase, at: Date.now() }; }
    row.dataset.updatedAt = String(s.at);
  }

  // newRow adds a row for a backup the config's table does not show yet, so its phase shows
  // at once; the refetch that follows fills in the rest.
  function newRow(ev) {
    var body = main.querySelector('table#backups[data-config="' + CSS.escape(ev.config) + '"] tbody');
    if (!body) { return null; }
    var empty = body.querySelector('tr.empty');
    if (empty) { empty.remove(); }
    var row = document.createElement('tr');
    row.dataset.backup = ev.backupName;
    ['name', 'phase', 'message', 'finished', 'deletion', 'actions'].forEach(function (cls) {
      var td = document.createElement('td');
      td.className = cls;
      row.appendChild(td);
    });
    row.firstChild.textContent = ev.backupName;
    body.insertBefore(row, body.firstChild);
    return row;
  }

  function applyBackup(ev) {
    var row = main.querySelector('tr[data-backup="' + CSS.escape(ev.backupName) + '"]');
    var known = !!row;
    if (!row && !(row = newRow(ev))) { return false; }
    var phaseCell = row.querySelector('.phase');
    if (phaseCell) {
      phaseCell.textContent = word(ev.phase);
      if (ev.phase === 'running' && ev.bytesTotal) {
        var bar = document.createElement('progress');
        bar.max = Number(ev.bytesTotal);
        bar.value = Number(ev.bytesDone);
        bar.setAttribute('aria-label', ev.stage + ' progress');
        phaseCell.appendChild(document.createTextNode(' '));
        phaseCell.appendChild(bar);
      }
    }
    text(row, 'message', ev.message || '');
    stamp(row, 'b:' + ev.backupName, ev.phase);
    return known;
  }

  function applyRestore(ev) {
    var rows = main.querySelectorAll('[data-restore="' + CSS.escape(ev.config) + '"]');
    if (!rows.length) { return false; }
    var r = restorePhase(ev);
    rows.forEach(function (row) {
      text(row, 'phase', r.phase);
      text(row, 'message', r.message);
      row.querySelectorAll('li[data-phase]').forEach(function (li) {
        if (li.dataset.phase === r.phase) { li.setAttribute('aria-current', 'step'); } else { li.removeAttribute('aria-current'); }
      });
      stamp(row, 'r:' + ev.config, r.phase);
    });
    var log = document.getElementById('phase-log');
    if (log) {
      var last = log.lastElementChild;
      if (!last || last.dataset.phase !== r.phase) {
        var li = document.createElement('li');
        li.dataset.phase = r.phase;
        li.dataset.at = String(Date.now());
        li.textContent = r.phase + (r.message ? ': ' + r.message : '');
        log.appendChild(li);
      } else {
        last.textContent = r.phase + (r.message ? ': ' + r.message : '');
      }
    }
    return true;
  }

  function apply(ev) {
    if (ev.operation === 'restore') { return applyRestore(ev); }
    if (ev.operation === 'backup' && ev.backupName) { return applyBackup(ev); }
    return true;
  }

  // reload fetches the page again and swaps in its data-section parts.
  function reload() {
    if (pending) { return; }
    pending = setTimeout(function () {
      pending = null;
      fetch(location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
        .then(function (r) {
          // The session ended (or its provider stopped renewing it): the sign-in page says why.
          if (r.redirected && new URL(r.url).pathname === '/login') { location.assign(r.url); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (!html) { return; }
          var doc = new DOMParser().parseFromString(html, 'text/html');
          main.querySelectorAll('[data-section]').forEach(function (old) {
            var fresh = doc.querySelector('[data-section="' + CSS.escape(old.dataset.section) + '"]');
            if (fresh) { old.replaceWith(document.importNode(fresh, true)); }
          });
          // The status lags its events by a moment: a backup whose last event ended it, but
          // whose fetched row does not show that yet (no restore link), is fetched again.
          var lagging = Object.keys(latest).some(function (k) {
            var ev = latest[k];
            if (ev.operation !== 'backup' || (ev.phase !== 'completed' && ev.phase !== 'failed')) { return false; }
            var row = doc.querySelector('tr[data-backup="' + CSS.escape(ev.backupName) + '"] .phase');
            return !!row && row.textContent.trim() !== word(ev.phase);
          });
          Object.keys(latest).forEach(function (k) { apply(latest[k]); });
          if (lagging && refetches < 30) { refetches++; setTimeout(reload, 1000); } else if (!lagging) { refetches = 0; }
        })
        .catch(function () { /* the next event tries again */ });
    }, 100);
  }

  var es = new EventSource(main.dataset.live);
  // The stream carries new events only: when it opens (the first time, after the page was
  // rendered, and after a drop) fetch what happened before it did.
  var dropped = true;
  es.addEventListener('open', function () { setState('open', 'on'); if (dropped) { dropped = false; reload(); } });
  es.addEventListener('error', function () { dropped = true; setState('reconnecting', 'reconnecting'); });
  es.addEventListener('revoked', function () { es.close(); setState('closed', 'stopped (access revoked)'); });
  es.addEventListener('status', function (e) {
    var ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    latest[(ev.operation === 'restore' ? 'r:' + ev.config : 'b:' + ev.backupName)] = ev;
    // Restores' progress and a backup's final state come from status: fetch it again.
    if (!apply(ev) || ev.phase !== 'running' || ev.operation === 'restore') { reload(); }
  });
}());

// The config form: a preset fills the schedule and keep; editing the schedule picks Custom.
(function () {
  'use strict';
  var form = document.getElementById('config-form');
  if (!form) { return; }
  var schedule = form.querySelector('#schedule');
  var keep = form.querySelector('#keep');
  form.querySelectorAll('input[name="preset"]').forEach(function (radio) {
    radio.addEventListener('change', function () {
      if (radio.dataset.schedule) {
        schedule.value = radio.dataset.schedule;
        if (keep && radio.dataset.keep) { keep.value = radio.dataset.keep; }
      }
    });
  });
  schedule.addEventListener('input', function () {
    var custom = form.querySelector('#preset-custom');
    if (custom) { custom.checked = true; }
  });
}());
