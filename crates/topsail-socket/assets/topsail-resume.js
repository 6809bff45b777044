/*!
 * topsail-resume.js: exactly-once delivery across reconnects, on top of the
 * stock sails.io.js (opt-in).
 *
 * Without it, a socket that reconnects with its `topsail.rid` cookie gets
 * back its rooms and every message it may have missed, at least once: a
 * repeat carries the same sequence number (the last argument of every
 * message: `io.socket.on('pet', (msg, seq) => ...)`).
 *
 * With it, the client tells the server which socket it was and the highest
 * sequence number it saw, and drops a message whose number it has seen:
 * each message once. (Numbers are not always rising: a read is sent what
 * its rooms got while it ran, and in a cluster another node's message may
 * come in after a later one; so a repeat is told by its number, not by
 * comparing it with the last one.)
 *
 * Browser: include it after sails.io.js, with reconnection on:
 *     <script src="/js/sails.io.js"></script>
 *     <script>io.sails.reconnection = true;</script>
 *     <script src="/__topsail/resume.js"></script>
 * Node: require('topsail-resume.js')(socket) with a sails.io.js socket.
 *
 * It returns its state ({ sid, seq }): the socket it was, the last number
 * it saw.
 */
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    var resume = factory();
    root.topsailResume = resume;
    if (root.io && root.io.socket) resume(root.io.socket);
  }
})(typeof self !== 'undefined' ? self : this, function () {
  // Sequence numbers are microseconds since 1970 or more: an app's own
  // trailing numeric argument is not one.
  var SMALLEST = 1e15;
  // Numbers seen are kept for the server's replay window (and a margin).
  var KEEP_US = 10 * 60 * 1e6;

  return function topsailResume(socket) {
    var state = { sid: null, seq: 0 };
    var seen = new Set();

    function firstTime(seq) {
      if (seen.has(seq)) return false;
      seen.add(seq);
      if (seq > state.seq) state.seq = seq;
      if (seen.size > 50000) {
        seen.forEach(function (s) { if (s < state.seq - KEEP_US) seen.delete(s); });
      }
      return true;
    }

    function patch(raw) {
      if (!raw || raw.__topsailResume) return;
      raw.__topsailResume = state;
      var onevent = raw.onevent;
      raw.onevent = function (packet) {
        var args = packet.data || [];
        var seq = args.length >= 3 ? args[args.length - 1] : undefined;
        if (typeof seq === 'number' && seq >= SMALLEST && !firstTime(seq)) return;
        return onevent.call(this, packet);
      };
      // socket.io-client 2 reads `opts.query` again at each reconnect. Its
      // options are the sails.io.js socket, whose `query` setter stops a
      // reconnect in progress: the manager gets options of its own that
      // inherit the rest and shadow `query`.
      var sailsOpts = raw.io.opts;
      var base = String(sailsOpts.query || '').replace(/&?topsail_(sid|seq)=[^&]*/g, '');
      var opts = Object.create(sailsOpts);
      raw.io.opts = opts;
      raw.io.on('reconnect_attempt', function () {
        if (!state.sid) return;
        Object.defineProperty(opts, 'query', {
          value: base + '&topsail_sid=' + encodeURIComponent(state.sid) + '&topsail_seq=' + state.seq,
          writable: true,
          configurable: true,
          enumerable: true,
        });
      });
      raw.on('connect', function () { state.sid = raw.id; });
      if (raw.connected) state.sid = raw.id;
    }

    if (socket._raw) patch(socket._raw);
    // sails.io.js makes its raw socket when it connects.
    socket.on('connect', function () { patch(socket._raw); });
    return state;
  };
});
