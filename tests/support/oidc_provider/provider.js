// A real OpenID Connect provider (the certified `oidc-provider` package) that answers like
// Pro Santé Connect, for Carnet's tests only: never deploy it.
//
//   node provider.js --port 4010        (or OIDC_PORT=4010 node provider.js)
//
// Environment:
//   OIDC_PORT                port on 127.0.0.1 (the --port argument wins)
//   OIDC_CLIENT_ID           the relying party's client id            (default carnet-test)
//   OIDC_CLIENT_SECRET       its secret                               (default carnet-test-secret)
//   OIDC_REDIRECT_URIS       its redirect URIs, separated by spaces   (default http://127.0.0.1/callback)
//   OIDC_TOKEN_AUTH_METHOD   client_secret_basic (default) or client_secret_post
//   OIDC_EXTRA_CLIENTS       a JSON array of further client metadata (optional; a client with
//                            userinfo_signed_response_alg gets a signed userinfo JWT)
//
// The issuer is http://127.0.0.1:<port>. Sign-in has no real UI: GET /interaction/<uid> answers a
// small form (fields `login`, the test account's key, and `acr`, default eidas1) that a test
// posts to /interaction/<uid>/login; posting `cancel=1` answers access_denied. Consent is
// implied for every registered client. Scope `scope_all` releases the Pro Santé Connect claims
// (SubjectNameID, SubjectRefPro, SubjectRole, names...) through the userinfo endpoint, as Pro
// Santé Connect does; the ID token carries sub, acr, amr, auth_time and the nonce.
// When it listens it prints one line: "listening <issuer>".

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const ROLE_OID = '1.2.250.1.213.1.1.5.5';

function exercice(profession, category, civility, family, given, specialtyType, specialty) {
  const out = {
    codeProfession: profession,
    codeCategorieProfessionnelle: category,
    codeCiviliteDexercice: civility,
    nomDexercice: family.toUpperCase(),
    prenomDexercice: given,
    activities: [],
  };
  if (specialty) {
    out.codeTypeSavoirFaire = specialtyType;
    out.codeSavoirFaire = specialty;
  }
  return out;
}

// Fictitious professionals. The key is what the login form takes; SubjectNameID is the
// national id ("8" + RPPS number), as Pro Santé Connect sends it.
const ACCOUNTS = {
  '810002909371': {
    sub: 'f:8a0d3c41-psc-medecin',
    SubjectNameID: '810002909371',
    family_name: 'LEFEVRE',
    given_name: 'Anne',
    SubjectRefPro: {
      codeCivilite: 'MME',
      exercices: [exercice('10', 'C', 'DR', 'Lefevre', 'Anne', 'S', 'SM54')],
    },
    SubjectRole: [`10^${ROLE_OID}`],
  },
  '810003141592': {
    sub: 'f:1f7e22b0-psc-infirmier',
    SubjectNameID: '810003141592',
    family_name: 'MARTIN',
    given_name: 'Paul',
    SubjectRefPro: {
      codeCivilite: 'M',
      exercices: [exercice('60', 'C', 'M', 'Martin', 'Paul')],
    },
    SubjectRole: [`60^${ROLE_OID}`],
  },
  '810002718281': {
    sub: 'f:6c93e5d2-psc-pharmacien',
    SubjectNameID: '810002718281',
    family_name: 'GARNIER',
    given_name: 'Lucie',
    SubjectRefPro: {
      codeCivilite: 'MME',
      exercices: [exercice('21', 'C', 'MME', 'Garnier', 'Lucie')],
    },
    SubjectRole: [`21^${ROLE_OID}`],
  },
  // An account whose answer lacks SubjectNameID (a provider that misbehaves).
  'sans-identifiant': {
    sub: 'f:0b5a77e9-psc-no-id',
    family_name: 'ANONYME',
    given_name: 'Sans',
    SubjectRefPro: { exercices: [exercice('10', 'C', 'DR', 'Anonyme', 'Sans')] },
    SubjectRole: [`10^${ROLE_OID}`],
  },
};
const BY_SUB = Object.fromEntries(Object.entries(ACCOUNTS).map(([key, a]) => [a.sub, key]));
const CLAIMS = ['SubjectNameID', 'SubjectRefPro', 'SubjectRole', 'family_name', 'given_name',
  'preferred_username'];

function argument(name) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : undefined;
}

const port = Number(argument('port') ?? process.env.OIDC_PORT ?? 0);
if (!Number.isInteger(port) || port <= 0) {
  console.error('provider.js: give a port (--port N or OIDC_PORT)');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const clients = [{
  client_id: process.env.OIDC_CLIENT_ID ?? 'carnet-test',
  client_secret: process.env.OIDC_CLIENT_SECRET ?? 'carnet-test-secret',
  redirect_uris: (process.env.OIDC_REDIRECT_URIS ?? 'http://127.0.0.1/callback').split(/\s+/).filter(Boolean),
  token_endpoint_auth_method: process.env.OIDC_TOKEN_AUTH_METHOD ?? 'client_secret_basic',
  grant_types: ['authorization_code'],
  response_types: ['code'],
}, ...JSON.parse(process.env.OIDC_EXTRA_CLIENTS ?? '[]')];

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  .export({ format: 'jwk' });

const configuration = {
  clients,
  jwks: { keys: [{ ...signingKey, kid: `test-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  acrValues: ['eidas1'],
  scopes: ['openid', 'scope_all'],
  claims: { openid: ['sub'], scope_all: CLAIMS },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, jwtUserinfo: { enabled: true } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AccessToken: 300, AuthorizationCode: 60, IdToken: 300 },
  async findAccount(ctx, sub) {
    const key = BY_SUB[sub];
    if (!key) return undefined;
    const { sub: _, ...claims } = ACCOUNTS[key];
    return {
      accountId: sub,
      async claims() {
        return { sub, ...claims, ...(claims.SubjectNameID ? { preferred_username: claims.SubjectNameID } : {}) };
      },
    };
  },
  // Every registered client is first-party here: consent is implied for what it asks.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid scope_all');
    grant.addOIDCClaims(['sub', ...CLAIMS]);
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'text/plain; charset=utf-8';
    ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
  },
};

const provider = new Provider(issuer, configuration);
const callback = provider.callback();

function escape(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, `interaction: ${err.message}\n`, 'text/plain; charset=utf-8');
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, 'interaction: wrong uid\n', 'text/plain; charset=utf-8');
    return;
  }
  if (req.method === 'GET' && !action) {
    const hint = escape(details.params.login_hint);
    send(res, 200, `<!doctype html><html lang="fr"><title>Connexion (test)</title>
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Identifiant <input name="login" value="${hint}"></label>
<input type="hidden" name="acr" value="eidas1">
<button>Se connecter</button>
</form></html>\n`);
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    if (form.get('cancel')) {
      await provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'sign-in cancelled',
      }, { mergeWithLastSubmission: false });
      return;
    }
    const account = ACCOUNTS[form.get('login') ?? ''];
    if (!account) {
      send(res, 400, 'unknown test account\n', 'text/plain; charset=utf-8');
      return;
    }
    await provider.interactionFinished(req, res, {
      login: { accountId: account.sub, acr: form.get('acr') || 'eidas1', amr: ['pop', 'mfa'], remember: false },
    }, { mergeWithLastSubmission: false });
    return;
  }
  send(res, 405, 'method not allowed\n', 'text/plain; charset=utf-8');
}

const server = createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login))?(?:\?.*)?$/.exec(req.url ?? '');
  if (!match) {
    callback(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((err) => {
    if (!res.headersSent) send(res, 500, `interaction failed: ${err.message}\n`, 'text/plain; charset=utf-8');
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
