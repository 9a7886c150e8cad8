// A real OpenID provider (panva/oidc-provider, OpenID certified) for the inbox tests and the
// README walkthrough. Its built-in development login accepts any login name; the name is the
// subject, and the roles of known names come from SIGNOFF_OIDC_ACCOUNTS.
//
// env: PORT (0 for any free port), REDIRECT_URIS (comma separated), CLIENT_ID, CLIENT_SECRET,
//      SIGNOFF_OIDC_ACCOUNTS = {"rita": {"roles": ["reviewer"], "groups": []}}
// stdout: one line "oidc-provider listening on http://127.0.0.1:<port>" once it serves.
import http from 'node:http';
import Provider from 'oidc-provider';

const accounts = JSON.parse(process.env.SIGNOFF_OIDC_ACCOUNTS || '{}');
const clientId = process.env.CLIENT_ID || 'signoff-inbox';

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: process.env.CLIENT_SECRET || 'signoff-inbox-secret',
      redirect_uris: (process.env.REDIRECT_URIS || '').split(',').filter(Boolean),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    // Claims the inbox maps to a signoff identity, in the ID token itself.
    claims: {
      openid: ['sub'],
      email: ['email'],
      signoff: ['roles', 'groups', 'principal_kind'],
    },
    scopes: ['openid', 'email', 'signoff'],
    conformIdTokenClaims: false,
    cookies: { keys: ['signoff-test-oidc-provider-cookie-key'] },
    async findAccount(ctx, id) {
      const known = accounts[id] || {};
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            email: `${id}@example.test`,
            roles: known.roles || [],
            groups: known.groups || [],
            principal_kind: known.kind || 'human',
          };
        },
      };
    },
    // First-party client: no consent screen, every requested scope granted.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email signoff');
      grant.addOIDCClaims(['email', 'roles', 'groups', 'principal_kind']);
      await grant.save();
      return grant;
    },
  });
  server.on('request', provider.callback());
  console.log(`oidc-provider listening on ${issuer}`);
});
