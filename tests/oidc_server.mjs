// A real, third-party authorization server for the suite: node's oidc-provider (npm).
//
// Started by the `oidc` fixture (tests/oidc_fixture.py) from the directory oidc-provider is
// installed in, with the path of a JSON configuration written by the fixture: the TLS files
// made by trustme, the clients to register, the access token lifetime. It listens on two
// loopback ports: the issuer's (TLS, a client certificate optional) and an mTLS-only one that
// the discovery document names in `mtls_endpoint_aliases`. It prints one JSON line with both
// ports and serves until it is terminated. All OAuth 2 logic is oidc-provider's; the only
// code here is the glue a deployment writes: how to read the client certificate off the TLS
// socket, the JWT bearer grant's handler (oidc-provider leaves RFC 7523 §2.1 to its users),
// and `/api/hello`, a protected resource that accepts a live access token and nothing else.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as querystring from 'node:querystring';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tls = {
  key: readFileSync(config.tls.key),
  cert: readFileSync(config.tls.cert),
  ca: readFileSync(config.tls.ca),
};
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

// The issuer's port asks for a client certificate but lets a connection without one through;
// the mTLS port refuses a connection without one from the test CA.
const main = https.createServer({ ...tls, requestCert: true, rejectUnauthorized: false });
const mtls = https.createServer({ ...tls, requestCert: true, rejectUnauthorized: true });
const port = await listen(main);
const mtlsPort = await listen(mtls);
const issuer = `https://127.0.0.1:${port}`;

function peerPem(ctx) {
  const peer = ctx.socket.getPeerCertificate();
  if (!peer || !peer.raw) return undefined;
  const lines = peer.raw.toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`;
}

const mTLS = {
  enabled: true,
  tlsClientAuth: true,
  selfSignedTlsClientAuth: true,
  getCertificate: peerPem,
  certificateAuthorized: (ctx) => ctx.socket.authorized,
  certificateSubjectMatches: (ctx, property, expected) => {
    const peer = ctx.socket.getPeerCertificate();
    if (property === 'tls_client_auth_subject_dn') {
      return Boolean(peer && peer.subject) && `CN=${peer.subject.CN}` === expected;
    }
    return false;
  },
};

const provider = new Provider(issuer, {
  clients: config.clients,
  clientAuthMethods: [
    'none',
    'client_secret_basic',
    'client_secret_post',
    'client_secret_jwt',
    'private_key_jwt',
    'tls_client_auth',
    'self_signed_tls_client_auth',
  ],
  discovery: {
    mtls_endpoint_aliases: { token_endpoint: `https://127.0.0.1:${mtlsPort}/token` },
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    // Every DPoP token call must carry a server nonce: the first is refused with
    // use_dpop_nonce and the client must send the proof again with the nonce it was given.
    dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
    mTLS,
  },
  ttl: { ClientCredentials: config.lifetime },
  scopes: ['api'],
});
provider.proxy = false;

// What the DPoP tests count: token calls, and those oidc-provider answered use_dpop_nonce (a
// proof without the nonce it wants). Read at /api/counts with the API's own challenges.
const counts = { tokenCalls: 0, tokenNonceChallenges: 0, nonceChallenges: 0 };
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token') {
    counts.tokenCalls += 1;
    if (ctx.body && ctx.body.error === 'use_dpop_nonce') counts.tokenNonceChallenges += 1;
  }
});

// A second issuer laid out as a Keycloak realm is (`/realms/NAME`, its token endpoint at
// `/protocol/openid-connect/token`), for the Keycloak class's signed-JWT and X509 clients. It is
// mounted the way oidc-provider documents for an issuer with a path: the request reaches it
// with the mount path taken off `url` and kept in `originalUrl`.
const realmPath = config.realm.path;
const realm = new Provider(`${issuer}${realmPath}`, {
  clients: config.realm.clients,
  clientAuthMethods: ['client_secret_jwt', 'private_key_jwt', 'tls_client_auth'],
  routes: { token: '/protocol/openid-connect/token' },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    mTLS,
  },
  ttl: { ClientCredentials: config.lifetime },
  scopes: ['api'],
});
realm.proxy = false;

// The JWT bearer grant: the assertion, signed with a key the client registered, is the
// credential. RFC 7523 §2.1 lets the request carry no client authentication, so the client
// is looked up by the assertion's issuer before oidc-provider authenticates it ('none').
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token' && ctx.is('application/x-www-form-urlencoded')) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = querystring.parse(Buffer.concat(chunks).toString());
    if (body.grant_type === JWT_BEARER && !body.client_id && typeof body.assertion === 'string') {
      try {
        body.client_id = jose.decodeJwt(body.assertion).iss;
      } catch {
        // a malformed assertion: the grant handler refuses it
      }
    }
    ctx.request.body = body;
  }
  await next();
});

provider.registerGrantType(
  JWT_BEARER,
  async (ctx) => {
    const { client, params } = ctx.oidc;
    const keys = jose.createLocalJWKSet(client.jwks || { keys: [] });
    let claims;
    try {
      ({ payload: claims } = await jose.jwtVerify(params.assertion, keys, {
        issuer: client.clientId,
        audience: [`${issuer}/token`, issuer],
        maxTokenAge: '5m',
        requiredClaims: ['exp', 'iat', 'jti', 'sub'],
      }));
    } catch (error) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_grant', error_description: `assertion refused (${error.code})` };
      return;
    }
    const token = new provider.ClientCredentials({ client, scope: params.scope || undefined });
    token.extra = { sub: claims.sub };
    const value = await token.save();
    ctx.body = { access_token: value, expires_in: token.expiration, token_type: 'Bearer', scope: token.scope };
  },
  ['assertion', 'scope'],
);

// The protected resource: 200 for a live access token (bearer or DPoP-bound with a valid
// proof carrying one of its two latest nonces), 401 otherwise; oidc-provider's own token
// store is the judge. Its DPoP nonce changes every `lifetime` seconds (RFC 9449 §9).
const apiNonces = [randomBytes(16).toString('base64url')];
setInterval(() => apiNonces.unshift(randomBytes(16).toString('base64url')), config.lifetime * 1000).unref();

async function api(req, res) {
  if (req.url === '/api/counts') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(counts));
    return;
  }
  const [scheme, value] = (req.headers.authorization || '').split(' ', 2);
  const token = value
    ? (await provider.ClientCredentials.find(value)) || (await realm.ClientCredentials.find(value))
    : undefined;
  let ok = Boolean(token) && ((scheme === 'Bearer' && !token.jkt) || (scheme === 'DPoP' && token.jkt));
  const headers = { 'content-type': 'application/json' };
  if (ok && token.jkt) {
    headers['dpop-nonce'] = apiNonces[0];
    const verdict = await dpopProofMatches(req, token, value);
    if (verdict === 'nonce') {
      counts.nonceChallenges += 1;
      headers['www-authenticate'] = 'DPoP error="use_dpop_nonce", error_description="nonce required"';
      res.writeHead(401, headers);
      res.end(JSON.stringify({ error: 'use_dpop_nonce' }));
      return;
    }
    ok = verdict === true;
  }
  res.writeHead(ok ? 200 : 401, headers);
  res.end(JSON.stringify(ok ? { hello: token.clientId } : { error: 'invalid_token' }));
}

const seenProofs = new Set();
async function dpopProofMatches(req, token, value) {
  const proof = req.headers.dpop;
  if (typeof proof !== 'string') return false;
  try {
    const claims = jose.decodeJwt(proof);
    if (!apiNonces.slice(0, 2).includes(claims.nonce)) return 'nonce';
  } catch {
    return false;
  }
  try {
    const { payload, protectedHeader } = await jose.jwtVerify(
      proof,
      async (header) => jose.importJWK(header.jwk, header.alg),
      { typ: 'dpop+jwt', maxTokenAge: '60s' },
    );
    const thumbprint = await jose.calculateJwkThumbprint(protectedHeader.jwk);
    const ath = jose.base64url.encode(
      new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(value))),
    );
    const htu = `${issuer}${req.url.split('?')[0]}`;
    if (seenProofs.has(payload.jti)) return false;
    seenProofs.add(payload.jti);
    return thumbprint === token.jkt && payload.htm === req.method && payload.htu === htu && payload.ath === ath;
  } catch {
    return false;
  }
}

const oidc = provider.callback();
const realmCallback = realm.callback();
function mounted(req, res) {
  req.originalUrl = req.url;
  req.url = req.url.slice(realmPath.length) || '/';
  return realmCallback(req, res);
}
main.on('request', (req, res) => {
  if (req.url.startsWith('/api/')) return api(req, res);
  if (req.url.startsWith(`${realmPath}/`)) return mounted(req, res);
  return oidc(req, res);
});
mtls.on('request', oidc);
process.stdout.write(`${JSON.stringify({ port, mtls_port: mtlsPort })}\n`);
