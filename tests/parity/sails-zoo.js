// The zoo's three models on Sails 1.5.18 (sails-disk, in memory), for
// comparing answers with topsail.
const Sails = require('sails').constructor;
const app = new Sails();
const port = Number(process.env.PORT || 1338);
app.lift({
  appPath: __dirname,
  port,
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
  datastores: { default: { adapter: 'sails-disk', inMemoryOnly: true } },
  blueprints: { rest: true, shortcuts: true, actions: false },
  orm: { moduleDefinitions: { models: {
    user: { attributes: { name: { type: 'string', required: true }, email: { type: 'string', required: true, unique: true, isEmail: true }, age: { type: 'number' }, pets: { collection: 'pet', via: 'owner' } } },
    pet: { attributes: { name: { type: 'string', required: true }, species: { type: 'string' }, owner: { model: 'user' }, tags: { collection: 'tag', via: 'pets' } } },
    tag: { attributes: { label: { type: 'string', required: true, unique: true }, pets: { collection: 'pet', via: 'tags' } } },
  } } },
}, (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('sails zoo on ' + port);
});
