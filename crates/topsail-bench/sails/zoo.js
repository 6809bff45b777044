// The zoo's three models on Sails 1.5.18 with sails-postgresql: the
// reference `scripts/bench --sails` measures beside topsail, on the same
// machine in the same run. Blueprints and pub-sub are Sails' defaults.
// DATABASE_URL: an empty PostgreSQL database (tables are created here).
const Sails = require('sails').constructor;
const app = new Sails();
app.lift({
  appPath: __dirname,
  port: Number(process.env.PORT || 1338),
  environment: 'development',
  log: { level: 'error' },
  hooks: { grunt: false, views: false, i18n: false, session: false },
  security: { csrf: false },
  models: {
    migrate: 'drop', schema: true, datastore: 'default',
    attributes: {
      id: { type: 'number', autoIncrement: true },
      createdAt: { type: 'number', autoCreatedAt: true },
      updatedAt: { type: 'number', autoUpdatedAt: true },
    },
  },
  datastores: { default: { adapter: 'sails-postgresql', url: process.env.DATABASE_URL } },
  blueprints: { rest: true, shortcuts: false, actions: false },
  orm: { moduleDefinitions: { models: {
    user: { attributes: { name: { type: 'string', required: true }, email: { type: 'string', required: true, unique: true, isEmail: true }, age: { type: 'number' }, pets: { collection: 'pet', via: 'owner' } } },
    pet: { attributes: { name: { type: 'string', required: true }, species: { type: 'string' }, owner: { model: 'user' }, tags: { collection: 'tag', via: 'pets' } } },
    tag: { attributes: { label: { type: 'string', required: true, unique: true }, pets: { collection: 'pet', via: 'tags' } } },
  } } },
}, (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('sails zoo on ' + app.config.port);
});
