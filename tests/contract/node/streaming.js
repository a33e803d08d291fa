// Subscribes to one channel with jsforce's streaming client (faye, long-polling), with the
// Replay and AuthFailure extensions, and reports on stdout, one JSON object a line:
//   {"kind": "sent", "channel": "/meta/handshake"}   every Bayeux message it sends
//   {"kind": "subscribed"}                           the subscription is in place
//   {"kind": "event", "message": {...}}              an event on the channel
//   {"kind": "auth-failure", "message": {...}}       the AuthFailure hook fired
// With "late", it connects first and subscribes once its connect is held (the second
// /meta/connect: faye's first one is answered at once). It runs until its stdin closes, so
// the test decides when it has seen enough.
//
// usage: node streaming.js <instanceUrl> <accessToken> <channel> <replayId> [late]
'use strict';

const jsforce = require('jsforce');
const { StreamingExtension } = require('jsforce/api/streaming');

const [instanceUrl, accessToken, channel, replayId, when] = process.argv.slice(2);
const report = (kind, fields) => process.stdout.write(JSON.stringify({ kind, ...fields }) + '\n');

const subscribe = () => client.subscribe(channel, (message) => report('event', { message })).then(
  () => report('subscribed', {}),
  (error) => report('refused', { error: String(error && error.message) }));

let connects = 0;
const sent = {
  outgoing: (message, callback) => {
    report('sent', { channel: message.channel });
    if (message.channel === '/meta/connect' && ++connects === 2 && when === 'late') {
      setTimeout(subscribe, 500);
    }
    callback(message);
  },
};
const conn = new jsforce.Connection({ instanceUrl, accessToken, version: '59.0' });
const replay = new StreamingExtension.Replay(channel, Number(replayId));
const authFailure = new StreamingExtension.AuthFailure((message) => report('auth-failure', { message }));
const client = conn.streaming.createClient([sent, replay, authFailure]);
if (when === 'late') {
  client.connect();
} else {
  subscribe();
}

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
