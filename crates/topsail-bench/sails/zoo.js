// The zoo's three models on Sails 1.5.18 with sails-postgresql: the
// reference `scripts/bench --sails` measures beside topsail, on the same
// machine in the same run. Blueprints and pub-sub are Sails' defaults; the
// models are the parity suite's (tests/parity/sails-zoo-config.js).
// DATABASE_URL: an empty PostgreSQL database (tables are created here).
const Sails = require('sails').constructor;
const zooConfig = require('../../../tests/parity/sails-zoo-config');
const app = new Sails();
app.lift(zooConfig({
  appPath: __dirname,
  port: Number(process.env.PORT || 1338),
  datastore: { adapter: 'sails-postgresql', url: process.env.DATABASE_URL },
  shortcuts: false,
}), (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('sails zoo on ' + app.config.port);
});
