// The unmodified jsforce client against the local org: one scenario, its observations
// printed as JSON for tests/contract/test_jsforce.py to check.
// Usage: node jsforce_client.mjs <org url> <username> <password+token>
import { createRequire } from "node:module";

const require = createRequire(new URL("./node/", import.meta.url));
const jsforce = require("jsforce");

const [url, username, password] = process.argv.slice(2);

async function scenario() {
  const conn = new jsforce.Connection({ loginUrl: url });
  const login = await conn.login(username, password);
  const seen = { version: conn.version, login: { userId: login.id, orgId: login.organizationId } };

  const identity = await conn.identity();
  seen.identity = { userId: identity.user_id, orgId: identity.organization_id,
                    username: identity.username, displayName: identity.display_name };

  const account = await conn.sobject("Account").create({ Name: "Acme", Industry: "Energy" });
  await conn.sobject("Account").create({ Name: "Bare" });
  const contacts = await conn.sobject("Contact").create([
    { LastName: "Ng", AccountId: account.id }, { LastName: "Li", AccountId: account.id }]);
  await conn.sobject("Account").update({ Id: account.id, Rating: "Hot" });
  const read = await conn.sobject("Account").retrieve(account.id);
  seen.crud = { created: account.success, contactsCreated: contacts.map((c) => c.success),
                read: { Name: read.Name, Industry: read.Industry, Rating: read.Rating,
                        OwnerIsUser: read.OwnerId === login.id } };

  const parents = await conn.query(
    "SELECT Name, (SELECT LastName FROM Contacts ORDER BY LastName) FROM Account ORDER BY Name");
  seen.subquery = parents.records.map((r) => ({
    Name: r.Name, Contacts: r.Contacts && { totalSize: r.Contacts.totalSize, done: r.Contacts.done,
                                            LastNames: r.Contacts.records.map((c) => c.LastName) } }));
  const queried = await conn.query("SELECT Id, LastName FROM Contact ORDER BY LastName");
  seen.query = { totalSize: queried.totalSize, LastNames: queried.records.map((r) => r.LastName) };

  const described = await conn.sobject("Account").describe();
  seen.childRelationships = described.childRelationships
    .filter((r) => r.relationshipName)
    .map((r) => `${r.childSObject}.${r.field}:${r.relationshipName}`).sort();

  await conn.sobject("Contact").destroy(contacts[0].id);
  const left = await conn.query("SELECT LastName FROM Contact");
  seen.afterDelete = left.records.map((r) => r.LastName);
  return seen;
}

scenario().then(
  (seen) => { process.stdout.write(JSON.stringify(seen)); },
  (error) => { process.stderr.write(`${error.name}: ${error.message}\n`); process.exit(1); });
