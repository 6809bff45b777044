// The zoo's three models on Sails 1.5.18 (sails-disk, in memory), for
// comparing answers with topsail.
const Sails = require('sails').constructor;
const zooConfig = require('./sails-zoo-config');
const app = new Sails();
const port = Number(process.env.PORT || 1338);
app.lift(zooConfig({
  appPath: __dirname,
  port,
  datastore: { adapter: 'sails-disk', inMemoryOnly: true },
  shortcuts: true,
}), (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('sails zoo on ' + port);
});
