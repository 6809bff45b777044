// The zoo's three models as a Sails 1.5.18 app: the lift configuration
// shared by the parity reference (sails-zoo.js, sails-disk in memory) and
// the benchmark's (crates/topsail-bench/sails/zoo.js, sails-postgresql).
// Plain data, no require: either package's own Sails loads it.
module.exports = function zooConfig({ appPath, port, datastore, shortcuts }) {
  return {
    appPath,
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
    datastores: { default: datastore },
    blueprints: { rest: true, shortcuts, actions: false },
    orm: { moduleDefinitions: { models: {
      user: { attributes: { name: { type: 'string', required: true }, email: { type: 'string', required: true, unique: true, isEmail: true }, age: { type: 'number' }, pets: { collection: 'pet', via: 'owner' } } },
      pet: { attributes: { name: { type: 'string', required: true }, species: { type: 'string' }, owner: { model: 'user' }, tags: { collection: 'tag', via: 'pets' } } },
      tag: { attributes: { label: { type: 'string', required: true, unique: true }, pets: { collection: 'pet', via: 'tags' } } },
    } } },
  };
};
