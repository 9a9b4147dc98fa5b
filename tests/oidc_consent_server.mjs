// node's oidc-provider for the first-consent tests (tests/test_consent.py): the authorization
// code flow with PKCE required, the device flow, and rotating refresh tokens.
//
// Started by the `consent_server` fixture with the path of a JSON configuration (the access
// token lifetime and the clients). It listens on plain http on a loopback port (renewauth
// allows http there), prints one JSON line with the port and serves until terminated. All
// OAuth 2 logic is oidc-provider's; the glue here is what a deployment writes itself:
//
// - the interaction routes (`/interaction/:uid`): GET shows a form, POST `login=NAME` logs a
//   person in, POST `consent=yes` grants what the client asked for, POST `deny=yes` ends the
//   interaction with access_denied. The tests' "browser" drives them by HTTP;
// - `/counts`: what the tests check afterwards (token calls by grant, refused refresh tokens,
//   the codes presented for exchange);
// - for the client `consent-slow` only, the first poll of each device code is answered
//   `slow_down` (oidc-provider itself never sends slow_down, nor an `interval`); for
//   `consent-flaky`, 503; for `consent-busy`, 429 with `Retry-After: 30`;
// - `POST /refuse-codes` with body `on` (or `off`): every code exchange is refused with
//   invalid_grant (after it is counted), as a server does for a code spent or expired;
// - the device authorization answers of the clients in `config.quick_device_clients` carry
//   `interval: 1`, so that a login through the command line (whose waits are real) is quick.
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';

const server = http.createServer();
const port = await new Promise((resolve) => {
  server.listen(0, '127.0.0.1', () => resolve(server.address().port));
});
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  clientAuthMethods: ['none', 'client_secret_post', 'client_secret_basic'],
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  // A refresh token for every client allowed the refresh_token grant, and a new one on every
  // use: the old one is refused afterwards (and its whole chain revoked, as oidc-provider
  // does when a rotated refresh token is presented again).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: config.lifetime,
    IdToken: config.lifetime,
    RefreshToken: 3600,
    DeviceCode: config.device_lifetime,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
  },
  scopes: ['openid', 'offline_access'],
  cookies: { keys: ['renewauth-consent-tests'] },
});
provider.proxy = false;

const counts = {
  tokenCalls: {}, refreshRefused: 0, exchangedCodes: [], deviceCodes: [], devicePolls: 0,
};
const slowedDown = new Set();
let refuseCodes = false; // set by POST /refuse-codes (body "on" or "off")

provider.use(async (ctx, next) => {
  const isToken = ctx.method === 'POST' && ctx.path === '/token';
  if (isToken) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = querystring.parse(Buffer.concat(chunks).toString());
    ctx.request.body = body;
    const grant = String(body.grant_type);
    counts.tokenCalls[grant] = (counts.tokenCalls[grant] || 0) + 1;
    if (grant === 'authorization_code') {
      counts.exchangedCodes.push(String(body.code));
      if (refuseCodes) {
        ctx.status = 400;
        ctx.body = { error: 'invalid_grant', error_description: 'code refused by the test' };
        return;
      }
    }
    if (grant === DEVICE_CODE) {
      counts.devicePolls += 1;
      if (!counts.deviceCodes.includes(body.device_code)) counts.deviceCodes.push(body.device_code);
      if (body.client_id === 'consent-flaky' && !slowedDown.has(body.device_code)) {
        slowedDown.add(body.device_code);
        ctx.status = 503;
        ctx.body = { error: 'temporarily_unavailable' };
        return;
      }
      if (body.client_id === 'consent-busy' && !slowedDown.has(body.device_code)) {
        slowedDown.add(body.device_code);
        ctx.status = 429;
        ctx.set('Retry-After', '30');
        ctx.body = { error: 'too_many_requests' };
        return;
      }
      if (body.client_id === 'consent-slow' && !slowedDown.has(body.device_code)) {
        slowedDown.add(body.device_code);
        ctx.status = 400;
        ctx.body = { error: 'slow_down', error_description: 'poll less often' };
        return;
      }
    }
  }
  await next();
  const quick = config.quick_device_clients || [];
  if (ctx.path === '/device/auth' && ctx.status === 200 && quick.includes(ctx.oidc?.client?.clientId)) {
    ctx.body = { ...ctx.body, interval: 1 };
  }
  if (isToken && ctx.request.body.grant_type === 'refresh_token' && ctx.status >= 400) {
    counts.refreshRefused += 1;
  }
});

function page(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html><body>${html}</body></html>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return querystring.parse(Buffer.concat(chunks).toString());
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (req.method === 'GET') {
    page(res, 200, `<h1>${prompt.name}</h1><form method="post" action="${req.url}">`
      + `<p>client ${params.client_id} asks for ${params.scope}</p></form>`);
    return;
  }
  const form = await readForm(req);
  let result;
  if (form.deny) {
    result = { error: 'access_denied', error_description: 'the person declined' };
  } else if (prompt.name === 'login') {
    result = { login: { accountId: String(form.login) } };
  } else if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    page(res, 400, `unexpected prompt ${prompt.name}`);
    return;
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const oidc = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/refuse-codes' && req.method === 'POST') {
    readForm(req).then((form) => {
      refuseCodes = 'on' in form;
      res.writeHead(204);
      res.end();
    });
    return;
  }
  if (req.url === '/counts') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(counts));
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => page(res, 500, `interaction failed: ${error.message}`));
    return;
  }
  oidc(req, res);
});
process.stdout.write(`${JSON.stringify({ port })}\n`);
