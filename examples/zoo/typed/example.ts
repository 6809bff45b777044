// The zoo's front end with the generated TypeScript module (`GET /topsail.ts`,
// saved beside this file as `topsail.ts`): typed records and values, and
// messages narrowed by `verb`. The wire is sails.io.js' own.
import { typed, TopsailError, type PetMessage, type PetRow, type SailsSocket } from './topsail';

export interface Seen {
  created: PetRow;
  renamed: PetRow;
  stale: number;
  messages: PetMessage[];
}

/** One socket watches pets; the other creates one, reads it with its tag,
 * renames it naming that tag, then tries again with the stale tag. Returns
 * what they saw (a socket is not sent its own messages). */
export async function tour(watcher: SailsSocket, writer: SailsSocket): Promise<Seen> {
  const watching = typed(watcher);
  const api = typed(writer);
  const messages: PetMessage[] = [];
  const stop = watching.on('pet', (m) => {
    messages.push(m);
    switch (m.verb) {
      case 'updated':
        // `previous` and `etag` exist only on this branch.
        if (m.previous && m.etag) console.log(`${m.previous.name} is now ${m.data.name} (${m.etag})`);
        break;
      case 'addedTo':
        console.log(`added ${m.addedId} to ${m.attribute}`);
        break;
      default:
        break;
    }
  });
  // Watch pets: a find subscribes the socket to the model's creations.
  const before: PetRow[] = await watching.find('pet', { where: { name: 'Rex' }, limit: 5, sort: 'name ASC' });
  const created = await api.create('pet', { name: `Rex ${before.length}`, species: 'dog' });
  const { etag } = await api.findOne('pet', created.id);
  const renamed = await api.update('pet', created.id, { name: 'Max' }, { ifMatch: etag });
  let stale = 0;
  try {
    await api.update('pet', created.id, { name: 'Bob' }, { ifMatch: etag });
  } catch (e) {
    if (e instanceof TopsailError) stale = e.jwr.statusCode;
  }
  await new Promise((r) => setTimeout(r, 200));
  stop();
  return { created, renamed: renamed.record, stale, messages };
}
