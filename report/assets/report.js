// nattrace report: lays out the packets from the JSON block. Every string
// from the recording goes into the page through textContent only.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('nattrace-data').textContent);
  var PAGE = 100;
  var page = 0;
  var shown = data.packets;
  var $ = function (id) { return document.getElementById(id); };
  var laneTitle = {
    'in': 'in (device)', 'prerouting': 'PREROUTING', 'routing': 'routing',
    'input': 'INPUT', 'forward': 'FORWARD', 'output': 'OUTPUT',
    'postrouting': 'POSTROUTING', 'out': 'out (device)'
  };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }

  function haystack(p) {
    if (p._q === undefined) {
      var parts = [p.h, p.ft, p.ns, p.n || ''];
      for (var i = 0; i < p.s.length; i++) {
        parts.push(p.s[i].ti, p.s[i].de || '', p.s[i].ns);
      }
      p._q = parts.join('\n').toLowerCase();
    }
    return p._q;
  }

  function applyFilters() {
    var fate = $('f-fate').value;
    var conn = $('f-conn').value;
    var q = $('f-q').value.trim().toLowerCase();
    shown = data.packets.filter(function (p) {
      return (fate === '' || p.f === fate) &&
        (conn === '' || String(p.c) === conn) &&
        (q === '' || haystack(p).indexOf(q) >= 0);
    });
    page = 0;
    render();
  }

  function swimlane(p) {
    var t = el('table', 'lanes');
    var head = el('tr');
    head.appendChild(el('th', 't', 'time'));
    data.lanes.forEach(function (l) { head.appendChild(el('th', 'lane-' + l, laneTitle[l] || l)); });
    var thead = el('thead');
    thead.appendChild(head);
    t.appendChild(thead);
    var body = el('tbody');
    var ns = null;
    p.s.forEach(function (s) {
      if (s.ns !== ns) {
        ns = s.ns;
        var band = el('tr', 'band');
        var td = el('td', null, 'namespace ' + ns);
        td.colSpan = data.lanes.length + 1;
        band.appendChild(td);
        body.appendChild(band);
      }
      var tr = el('tr', 'st');
      tr.appendChild(el('td', 't', s.t));
      data.lanes.forEach(function (l) {
        var td = el('td', 'lane-' + l);
        if (l === s.l) {
          var card = el('div', 'step k-' + s.k + (s.b ? ' bad' : ''));
          card.appendChild(el('span', 'ti', s.ti));
          if (s.v && s.v !== 'continue') { card.appendChild(el('span', 'vd', s.v)); }
          if (s.de) { card.appendChild(el('code', 'de', s.de)); }
          td.appendChild(card);
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    if (p.s.length === 0) {
      var tr = el('tr');
      var td = el('td', 'dim', 'no rule matched in any table');
      td.colSpan = data.lanes.length + 1;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    t.appendChild(body);
    return t;
  }

  function detail(p) {
    var d = el('div', 'detail');
    d.appendChild(swimlane(p));
    d.appendChild(el('p', 'pfinal', '⇒ ' + p.ft));
    if (p.d && p.d.fix && p.d.by !== 'rp_filter') { d.appendChild(el('p', null, 'Fix: ' + p.d.fix)); }
    if (p.n) { d.appendChild(el('p', 'dim', p.n)); }
    if (p.fr && p.fr.length) {
      var fr = el('div', 'frames');
      fr.appendChild(el('p', 'dim small', 'Captured as:'));
      p.fr.forEach(function (f) {
        var det = el('details');
        det.appendChild(el('summary', null, f.line));
        if (f.cmt) { det.appendChild(el('p', 'cmt', 'comment: ' + f.cmt)); }
        det.appendChild(el('pre', 'dump', f.dump));
        if (f.cut) { det.appendChild(el('p', 'cmt', f.cut)); }
        fr.appendChild(det);
      });
      d.appendChild(fr);
    }
    return d;
  }

  function toggle(row, p, open) {
    var btn = row.firstChild;
    var d = row.querySelector('.detail');
    if (open === undefined) { open = !d || d.hidden; }
    if (open && !d) {
      d = detail(p);
      row.appendChild(d);
    }
    if (d) { d.hidden = !open; }
    btn.setAttribute('aria-expanded', open ? 'true' : 'false');
  }

  function packetRow(p) {
    var row = el('div', 'pkt fate-' + p.f);
    row.id = 'packet-' + p.id;
    row.dataset.fate = p.f;
    row.dataset.conn = String(p.c);
    row.dataset.id = String(p.id);
    var b = el('button', 'head');
    b.type = 'button';
    b.setAttribute('aria-expanded', 'false');
    b.appendChild(el('span', 'tag', '#' + p.c + (p.r ? ' reply ←' : ' request →')));
    b.appendChild(el('span', 'hdr', p.h));
    b.appendChild(el('span', 'pfate', '⇒ ' + p.ft));
    b.addEventListener('click', function () { toggle(row, p); });
    row.appendChild(b);
    return row;
  }

  function render() {
    var list = $('list');
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (page >= pages) { page = pages - 1; }
    var start = page * PAGE;
    var end = Math.min(shown.length, start + PAGE);
    var frag = document.createDocumentFragment();
    for (var i = start; i < end; i++) { frag.appendChild(packetRow(shown[i])); }
    list.replaceChildren(frag);
    $('p-count').textContent = shown.length === 0
      ? 'no packet matches (' + data.packets.length + ' traced)'
      : 'packets ' + (start + 1) + '–' + end + ' of ' + shown.length +
        (shown.length !== data.packets.length ? ' (' + data.packets.length + ' traced)' : '');
    $('p-prev').disabled = page === 0;
    $('p-next').disabled = page >= pages - 1;
    list.dataset.shown = String(end - start);
    list.dataset.matching = String(shown.length);
  }

  function show(fate, conn) {
    $('f-fate').value = fate;
    $('f-conn').value = conn;
    applyFilters();
    $('packets').scrollIntoView();
  }

  $('f-fate').addEventListener('change', applyFilters);
  $('f-conn').addEventListener('change', applyFilters);
  $('f-q').addEventListener('input', applyFilters);
  $('p-prev').addEventListener('click', function () { page--; render(); });
  $('p-next').addEventListener('click', function () { page++; render(); });
  $('p-expand').addEventListener('click', function () {
    var rows = $('list').children;
    var byId = {};
    shown.forEach(function (p) { byId[p.id] = p; });
    for (var i = 0; i < rows.length; i++) { toggle(rows[i], byId[rows[i].dataset.id], true); }
  });
  Array.prototype.forEach.call(document.querySelectorAll('button[data-fate]'), function (b) {
    b.addEventListener('click', function () { show(b.dataset.fate, ''); });
  });
  Array.prototype.forEach.call(document.querySelectorAll('button[data-conn]'), function (b) {
    b.addEventListener('click', function () { show('', b.dataset.conn); });
  });
  render();
  // #packet-ID opens that packet; #expand opens every packet of the first page.
  var m = /^#packet-(\d+)$/.exec(location.hash);
  if (m) {
    for (var i = 0; i < shown.length; i++) {
      if (String(shown[i].id) === m[1]) {
        page = Math.floor(i / PAGE);
        render();
        var row = $('list').querySelector('[data-id="' + m[1] + '"]');
        toggle(row, shown[i], true);
        row.scrollIntoView();
        break;
      }
    }
  } else if (location.hash === '#expand') {
    $('p-expand').click();
  }
  document.body.dataset.ready = '1';
}());
