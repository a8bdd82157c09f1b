"""The credential detector's table: real credential shapes and look-alikes that are not.

Every value is fake. Random parts are drawn from a generator seeded with the row's label,
so no literal key sits in this file (no scanner mistakes it for a leak) and every run sees
the same values. Contexts vary on purpose: env files, shell commands, JSON, YAML, prose
and log lines.

A positive row counts as found when the detector flags its text *and* masking removes the
credential (its first and last 8 characters are gone). A negative row is a false positive
when the detector flags anything in it.

Print the figures with `python -m tests.secret_table` (`-v` lists every miss).
"""

from __future__ import annotations

import base64
import random
import string
import sys
import uuid
from dataclasses import dataclass

from reflection.secrets import find_secrets, mask_secrets

B62 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = B62 + "+/"
URLSAFE = B62 + "-_"
UPPER_DIGITS = string.ascii_uppercase + string.digits
BASE32 = string.ascii_uppercase + "234567"


def rand(label: str, n: int, alphabet: str = B62) -> str:
    """`n` characters of `alphabet`, the same on every run (seeded with `label`)."""
    rng = random.Random(label)
    return "".join(rng.choice(alphabet) for _ in range(n))


def rand_b64(label: str, nbytes: int, *, urlsafe: bool = False) -> str:
    """Base64 of `nbytes` seeded random bytes (padded), as keys are usually printed."""
    raw = random.Random(label).randbytes(nbytes)
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()


def rand_uuid(label: str) -> str:
    """A seeded version-4 UUID."""
    return str(uuid.UUID(int=random.Random(label).getrandbits(128), version=4))


def b64(text: str, *, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(text.encode()).decode()


def jwt(label: str, claims: str) -> str:
    header = b64('{"alg":"HS256","typ":"JWT"}', urlsafe=True).rstrip("=")
    payload = b64(claims, urlsafe=True).rstrip("=")
    return f"{header}.{payload}.{rand(label, 43, URLSAFE)}"


def pem(label: str, kind: str, lines: int = 4, *, headers: str = "") -> str:
    body = "\n".join(rand(f"{label}{i}", 64, B64) for i in range(lines))
    return f"-----BEGIN {kind}-----\n{headers}{body}\n-----END {kind}-----"


@dataclass(frozen=True)
class Row:
    """One text of the table; `secret` is the credential in it, None for a look-alike."""

    label: str
    text: str
    secret: str | None = None


def _pw(label: str, n: int = 14) -> str:
    """A password as people pick them when told to: letters, digits and a symbol."""
    return rand(label, n - 2) + rand(label + "!", 1, "!#%&*+-=?@^_") + rand(label + "9", 1, HEX)


# --- credentials ----------------------------------------------------------------------

_ENC = rand_b64("enc", 32)
_CURL = _pw("curl")
_CURL2 = _pw("curl2")
_MYSQL = _pw("mysql", 12)
_MYSQL2 = _pw("mysql2")
_MYSQL3 = _pw("mysql3")
_DEPLOY = _pw("deploy")
_SSHPASS = _pw("sshpass", 11)
_DOCKER = rand("docker", 24)
_DOCKER_STDIN = rand("docker-stdin", 32)
_HEX_TOKEN = rand("drf", 40, HEX)
_BEARER = rand("bearer", 40, URLSAFE)
_BASIC = b64("deploy:" + _pw("basic"))
_HVS = "hvs." + rand("hvs", 90, URLSAFE)
_HVB = "hvb." + rand("hvb", 120, URLSAFE)
_VAULT_LEGACY = "s." + rand("vault-s", 24)
_PROSE_HEX = rand("prose-hex", 64, HEX)
_PROSE_HEX2 = rand("prose-hex2", 32, HEX)
_AKIA = "AKIA" + rand("akia", 16, UPPER_DIGITS)
_ASIA = "ASIA" + rand("asia", 16, UPPER_DIGITS)
_AWS_SECRET = rand("aws-secret", 40, B64)
_AWS_SECRET2 = rand("aws-secret2", 40, B64)
_AWS_SESSION = rand("aws-session", 300, B64)
_GCP_KEY = "\\n".join(rand(f"gcp{i}", 64, B64) for i in range(3))
_AZ_KEY = rand_b64("azure", 64)
_AZ_KEY2 = rand_b64("azure2", 64)
_AZ_SB = rand_b64("azure-sb", 32)
_AZ_SIG = rand_b64("azure-sig", 32).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
_AZ_CLIENT = rand("az-client", 3) + "8Q~" + rand("az-client2", 34, URLSAFE + "~.")
_GHP = "ghp_" + rand("ghp", 36)
_GHS = "ghs_" + rand("ghs", 36)
_GHO = "gho_" + rand("gho", 36)
_GH_PAT = "github_pat_" + rand("pat1", 22) + "_" + rand("pat2", 59)
_GLPAT = "glpat-" + rand("glpat", 20, URLSAFE)
_GLPAT2 = "glpat-" + rand("glpat2", 20, URLSAFE)
_XOXB = "xoxb-" + rand("xoxb1", 12, "0123456789") + "-" + rand("xoxb2", 13, "0123456789")
_XOXB += "-" + rand("xoxb3", 24)
_XOXP = "xoxp-" + "-".join(rand(f"xoxp{i}", 11, "0123456789") for i in range(3))
_XOXP += "-" + rand("xoxp", 32, HEX)
_SLACK_HOOK = (
    "https://hooks.slack.com/services/T"
    + rand("hook-t", 8, UPPER_DIGITS)
    + "/B"
    + rand("hook-b", 10, UPPER_DIGITS)
    + "/"
    + rand("hook", 24)
)
_STRIPE = "sk_live_51" + rand("stripe", 97)
_STRIPE_RK = "rk_live_" + rand("stripe-rk", 24)
_STRIPE_TEST = "sk_test_" + rand("stripe-test", 24)
_WHSEC = "whsec_" + rand("whsec", 32)
_TWILIO_TOKEN = rand("twilio", 32, HEX)
_TWILIO_SK = "SK" + rand("twilio-sk", 32, HEX)
_SENDGRID = "SG." + rand("sg1", 22, URLSAFE) + "." + rand("sg2", 43, URLSAFE)
_NPM = "npm_" + rand("npm", 36)
_NPM2 = "npm_" + rand("npm2", 36)
_PYPI = "pypi-AgEIcHlwaS5vcmc" + rand("pypi", 120, URLSAFE)
_PYPI2 = "pypi-AgEIcHlwaS5vcmc" + rand("pypi2", 140, URLSAFE)
_OPENAI_LEGACY = "sk-" + rand("oa1", 20) + "T3BlbkFJ" + rand("oa2", 20)
_OPENAI_PROJ = "sk-proj-" + rand("oa-proj", 156, URLSAFE)
_OPENAI_SVC = "sk-svcacct-" + rand("oa-svc", 120, URLSAFE)
_ANTHROPIC = "sk-ant-api03-" + rand("ant", 93, URLSAFE) + "AA"
_HF = "hf_" + rand("hf", 34)
_JWT = jwt("jwt", '{"sub":"1234567890","name":"alice","iat":1716239022}')
_JWT2 = jwt("jwt2", '{"iss":"https://auth.example.com","aud":"api","exp":1924992000}')
_RSA = pem("rsa", "RSA PRIVATE KEY", 6)
_PKCS8 = pem("pkcs8", "PRIVATE KEY", 5)
_EC = pem("ec", "EC PRIVATE KEY", 3)
_OPENSSH = pem("openssh", "OPENSSH PRIVATE KEY", 5)
_PGP = pem("pgp", "PGP PRIVATE KEY BLOCK", 5)
_ENCRYPTED = pem(
    "enc-rsa",
    "RSA PRIVATE KEY",
    4,
    headers="Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
    + rand("dek", 32, HEX).upper()
    + "\n\n",
)
_PG_PW = _pw("pg-url")
_MONGO_PW = _pw("mongo", 16)
_REDIS_PW = rand("redis", 32)
_AMQP_PW = _pw("amqp")
_SQLA_PW = _pw("sqla")
_NETRC_PW = _pw("netrc")
_HEROKU = rand_uuid("heroku")
_X_SECRET = rand("x-secret", 32)
_JWT_SECRET = rand("jwt-secret", 48, B62 + "!@#$%^&*")
_RAILS = rand("rails", 128, HEX)
_DJANGO = rand("django", 50, B62 + "!@#%^&*(-_=+)")
_LARAVEL = rand_b64("laravel", 32)
_FERNET = rand_b64("fernet", 32, urlsafe=True)
_K8S_PW = b64(_pw("k8s"))
_COMPOSE_PW = _pw("compose")
_YAML_KEY = rand("yaml-key", 32)
_CLIENT_SECRET = rand("client-secret", 40, URLSAFE)
_GOOGLE = "AIza" + rand("google", 35, URLSAFE)
_GOCSPX = "GOCSPX-" + rand("gocspx", 28, URLSAFE)
_DISCORD = (
    "M" + rand("discord1", 25) + "." + rand("discord2", 6) + "." + rand("discord3", 27, URLSAFE)
)
_TELEGRAM = rand("tg1", 10, "123456789") + ":AA" + rand("tg2", 33, URLSAFE)
_MAILGUN = "key-" + rand("mailgun", 32, HEX)
_MAILCHIMP = rand("mailchimp", 32, HEX) + "-us14"
_SHOPIFY = "shpat_" + rand("shopify", 32, HEX)
_DIGITALOCEAN = "dop_v1_" + rand("do", 64, HEX)
_DATABRICKS = "dapi" + rand("databricks", 32, HEX)
_LINEAR = "lin_api_" + rand("linear", 40)
_POSTMAN = "PMAK-" + rand("pmak1", 24, HEX) + "-" + rand("pmak2", 34, HEX)
_GRAFANA = "glsa_" + rand("grafana", 32) + "_" + rand("grafana2", 8, HEX)
_NEWRELIC = "NRAK-" + rand("newrelic", 27, UPPER_DIGITS)
_SQUARE = "sq0atp-" + rand("square", 22, URLSAFE)
_SQUARE_SECRET = "sq0csp-" + rand("square-secret", 43, URLSAFE)
_ATLASSIAN = "ATATT3xFfGF0" + rand("atlassian", 180, URLSAFE) + "=" + rand("atl", 8, HEX.upper())
_AGE = "AGE-SECRET-KEY-1" + rand("age", 58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
_DOPPLER = "dp.st.prd." + rand("doppler", 40)
_TFC = rand("tfc1", 14) + ".atlasv1." + rand("tfc2", 67)
_CLOUDFLARE = rand("cloudflare", 40, URLSAFE)
_PROSE_PW = _pw("prose-pw")
_LOG_PW = _pw("log-pw")
_LOG_PASS = _pw("log-pass")
_VENDOR = rand("vendor", 40)
_REDIS_CLI = _pw("redis-cli")
_PSQL = _pw("psql")
_PGPASSWORD = _pw("pgpassword")
_OPENSSL = _pw("openssl")
_LDAP = _pw("ldap")
_TOTP = rand("totp", 32, BASE32)
_QUERY_TOKEN = rand("query-token", 40, URLSAFE)
_MINIO = rand("minio", 40)
_SMTP = _pw("smtp")
_CARGO = "cio" + rand("cargo", 32)
_API_KEY_HEADER = rand("x-api-key", 32, HEX)
_SESSION_COOKIE = rand("cookie", 48, URLSAFE)
_WEBHOOK = rand("webhook-secret", 40, HEX)
_SIGNING = rand_b64("signing", 32)
_HTPASSWD = _pw("htpasswd")

_H1 = rand("h1", 40)
_H2 = _pw("h2")
_H3 = _pw("h3")
_H4 = rand("h4", 32, HEX)
_H5 = _pw("h5")
_H6 = _pw("h6")
_H7 = rand("h7", 40)
_H8 = rand("h8", 40)
_H9 = _pw("h9")
_H10 = rand("h10", 64, HEX)
_H11 = "ghp_" + rand("h11", 36)
_H12 = f"xoxb-{rand('h12a', 12, '0123456789')}-{rand('h12b', 13, '0123456789')}-{rand('h12c', 24)}"
_H13 = rand_b64("h13", 48)
_H14 = _pw("h14")
_H15 = _pw("h15")
_H16 = rand("h16", 32)
_H17 = _pw("h17")
_H18 = "AKIA" + rand("h18", 16, UPPER_DIGITS)
_H19 = rand("h19", 40, B64)
_H20 = _pw("h20")
_H21 = rand("h21", 24)
_H22 = "sk-ant-api03-" + rand("h22", 90, URLSAFE)
_H23 = "hf_" + rand("h23", 34)
_H24 = "glpat-" + rand("h24", 20, URLSAFE)
_H25 = rand("h25", 32, HEX)
_H26 = rand("h26", 43, URLSAFE)
_H27 = jwt("h27", '{"sub":"svc","role":"admin"}')
_H28 = pem("h28", "DSA PRIVATE KEY", 4)
_H29 = rand("h29", 40)
_H30 = _pw("h30")

POSITIVES: list[Row] = [
    # env files and exported variables
    Row("env-encryption-key", f"ENCRYPTION_KEY={_ENC}", _ENC),
    Row("env-aws-id", f"AWS_ACCESS_KEY_ID={_AKIA}", _AKIA),
    Row("env-aws-secret", f"export AWS_SECRET_ACCESS_KEY={_AWS_SECRET}", _AWS_SECRET),
    Row("env-x-secret", f"export WEBHOOK_SIGNING_SECRET={_X_SECRET}", _X_SECRET),
    Row("env-jwt-secret", f"JWT_SECRET='{_JWT_SECRET}'", _JWT_SECRET),
    Row("env-rails", f"SECRET_KEY_BASE={_RAILS}", _RAILS),
    Row("env-laravel", f"APP_KEY=base64:{_LARAVEL}", _LARAVEL),
    Row("env-fernet", f"FERNET_KEY={_FERNET}", _FERNET),
    Row("env-heroku", f"HEROKU_API_KEY={_HEROKU}", _HEROKU),
    Row("env-cloudflare", f"CLOUDFLARE_API_TOKEN={_CLOUDFLARE}", _CLOUDFLARE),
    Row("env-github", f"GITHUB_TOKEN={_GHP}", _GHP),
    Row("env-npm", f"NPM_TOKEN={_NPM}", _NPM),
    Row("env-twine", f"TWINE_PASSWORD={_PYPI}", _PYPI),
    Row("env-openai", f'OPENAI_API_KEY="{_OPENAI_SVC}"', _OPENAI_SVC),
    Row("env-twilio", f"TWILIO_AUTH_TOKEN={_TWILIO_TOKEN}", _TWILIO_TOKEN),
    Row("env-azure-key", f"AZURE_STORAGE_KEY={_AZ_KEY2}", _AZ_KEY2),
    Row("env-azure-client", f"AZURE_CLIENT_SECRET={_AZ_CLIENT}", _AZ_CLIENT),
    Row("env-vault-legacy", f"export VAULT_TOKEN={_VAULT_LEGACY}", _VAULT_LEGACY),
    Row("env-minio", f"MINIO_ROOT_PASSWORD={_MINIO}", _MINIO),
    Row("env-pgpassword", f"PGPASSWORD='{_PGPASSWORD}' psql -h db -U app app", _PGPASSWORD),
    Row("env-database-url", f"DATABASE_URL=postgresql://app:{_PG_PW}@db.internal:5432/app", _PG_PW),
    Row("env-stripe-test", f"STRIPE_KEY={_STRIPE_TEST}", _STRIPE_TEST),
    # shell commands
    Row("sh-curl-u-pass", "curl -u admin:pass https://api.example.com/v1/status", "pass"),
    Row("sh-curl-user", f"curl --user deploy:{_CURL} -X POST https://ci.example.com/job", _CURL),
    Row("sh-mysql-p", f"mysql -h db.internal -u app -p{_MYSQL} app", _MYSQL),
    Row("sh-mysql-password-eq", f"mysqldump --password={_MYSQL2} --all-databases > all.sql", _MYSQL2),
    Row("sh-mysql-password-space", f"mysql --user=app --password {_MYSQL3} app", _MYSQL3),
    Row("sh-password-space", f"./deploy.sh --env prod --password {_DEPLOY}", _DEPLOY),
    Row("sh-sshpass-quoted", f"sshpass -p '{_SSHPASS}' ssh deploy@10.0.0.5", _SSHPASS),
    Row("sh-sshpass-bare", "sshpass -p hunter22 scp build.tgz ci@host:/srv", "hunter22"),
    Row("sh-docker-login", f"docker login -u ci-bot -p {_DOCKER} registry.example.com", _DOCKER),
    Row(
        "sh-docker-stdin",
        f'echo "{_DOCKER_STDIN}" | docker login ghcr.io -u bot --password-stdin',
        _DOCKER_STDIN,
    ),
    Row("sh-curl-bearer", f'curl -H "Authorization: Bearer {_BEARER}" https://api.example.com', _BEARER),
    Row("sh-redis-cli", f"redis-cli -h cache -a {_REDIS_CLI} ping", _REDIS_CLI),
    Row("sh-psql-conninfo", f'psql "host=db user=app password={_PSQL} dbname=app"', _PSQL),
    Row("sh-openssl-pass", f"openssl enc -aes-256-cbc -in a.txt -pass pass:{_OPENSSL}", _OPENSSL),
    Row("sh-ldapsearch", f"ldapsearch -x -D cn=admin,dc=example,dc=org -w {_LDAP} -b dc=example", _LDAP),
    Row("sh-vault-login", f"vault login {_HVB}", _HVB),
    Row("sh-git-remote", f"git remote add origin https://x-access-token:{_GHS}@github.com/acme/app.git", _GHS),
    Row("sh-htpasswd", f"htpasswd -b -c /etc/nginx/.htpasswd admin {_HTPASSWD}", _HTPASSWD),
    Row("sh-curl-url-first", f'curl "https://api.example.com/v1/items?page=2&per_page=50" -u deploy:{_CURL2}', _CURL2),
    Row("sh-x-api-key", f"curl -H 'X-API-Key: {_API_KEY_HEADER}' https://api.example.com/items", _API_KEY_HEADER),
    # JSON
    Row("json-aws-session", f'{{"AccessKeyId": "{_ASIA}", "SecretAccessKey": "{_AWS_SECRET2}", "SessionToken": "{_AWS_SESSION}"}}', _AWS_SECRET2),
    Row("json-gcp-sa", f'{{"type": "service_account", "project_id": "acme-prod", "private_key": "-----BEGIN PRIVATE KEY-----\\n{_GCP_KEY}\\n-----END PRIVATE KEY-----\\n"}}', _GCP_KEY[:64]),
    Row("json-gho", f'{{"access_token": "{_GHO}", "token_type": "bearer", "scope": "repo"}}', _GHO),
    Row("json-slack-hook", f'{{"channel": "#deploys", "webhook_url": "{_SLACK_HOOK}"}}', _SLACK_HOOK),
    Row("json-jwt", f'{{"id_token": "{_JWT2}", "expires_in": 3600}}', _JWT2),
    Row("json-client-secret", f'{{"client_id": "web-app", "client_secret": "{_CLIENT_SECRET}"}}', _CLIENT_SECRET),
    Row("json-google-oauth", f'{{"web": {{"client_id": "1234.apps.googleusercontent.com", "client_secret": "{_GOCSPX}"}}}}', _GOCSPX),
    Row("json-sendgrid", f'{{"provider": "sendgrid", "key": "{_SENDGRID}"}}', _SENDGRID),
    Row("json-stripe", f'{{"stripe": {{"secret": "{_STRIPE}"}}}}', _STRIPE),
    Row("json-anthropic", f'{{"anthropic_api_key": "{_ANTHROPIC}"}}', _ANTHROPIC),
    Row("json-firebase", f'const firebaseConfig = {{ apiKey: "{_GOOGLE}", projectId: "acme" }};', _GOOGLE),
    Row("json-docker-auth", f'{{"auths": {{"registry.example.com": {{"auth": "{_BASIC}"}}}}}}', _BASIC),
    # YAML
    Row("yaml-slack", f"slack:\n  bot_token: {_XOXB}\n  channel: '#ops'", _XOXB),
    Row("yaml-gitlab", f"variables:\n  GITLAB_TOKEN: {_GLPAT}", _GLPAT),
    Row("yaml-github-pat", f"auth:\n  token: {_GH_PAT}", _GH_PAT),
    Row("yaml-k8s-secret", f"kind: Secret\ndata:\n  password: {_K8S_PW}", _K8S_PW),
    Row("yaml-compose", f"environment:\n  - POSTGRES_PASSWORD={_COMPOSE_PW}", _COMPOSE_PW),
    Row("yaml-api-key", f"service:\n  api_key: {_YAML_KEY}\n  timeout: 30", _YAML_KEY),
    Row("yaml-sqlalchemy", f"database:\n  url: mysql+pymysql://root:{_SQLA_PW}@localhost/app", _SQLA_PW),
    Row("yaml-smtp", f"smtp:\n  host: smtp.example.com\n  password: \"{_SMTP}\"", _SMTP),
    Row("yaml-stripe-rk", f"stripe_restricted: {_STRIPE_RK}", _STRIPE_RK),
    Row("yaml-whsec", f"webhooks:\n  signing_secret: {_WHSEC}", _WHSEC),
    Row("yaml-azure-conn", f"storage: DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={_AZ_KEY};EndpointSuffix=core.windows.net", _AZ_KEY),
    Row("yaml-servicebus", f"bus: Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={_AZ_SB}", _AZ_SB),
    Row("yaml-hf", f"huggingface:\n  token: {_HF}", _HF),
    Row("yaml-pypirc", f"[pypi]\nusername = __token__\npassword = {_PYPI2}", _PYPI2),
    Row("yaml-npmrc", f"//registry.npmjs.org/:_authToken={_NPM2}", _NPM2),
    Row("yaml-cargo", f'[registry]\ntoken = "{_CARGO}"', _CARGO),
    Row("yaml-django", f"SECRET_KEY = '{_DJANGO}'", _DJANGO),
    Row("yaml-signing", f"jwt:\n  signing_key: {_SIGNING}", _SIGNING),
    # prose, as a memory body or a request would hold it
    Row("prose-hex-key", f"For the staging deploy the key is {_PROSE_HEX}, rotate it monthly.", _PROSE_HEX),
    Row("prose-signing-secret", f"The webhook signing secret for staging is {_PROSE_HEX2}.", _PROSE_HEX2),
    Row("prose-password", f"The staging database password is {_PROSE_PW}.", _PROSE_PW),
    Row("prose-vault", f"Use the Vault token {_HVS} for the migration job.", _HVS),
    Row("prose-vendor", f"vendor key: {_VENDOR}", _VENDOR),
    Row("prose-openai", f"Our OpenAI key is {_OPENAI_PROJ} (project scope).", _OPENAI_PROJ),
    Row("prose-openai-legacy", f"old key {_OPENAI_LEGACY} was revoked", _OPENAI_LEGACY),
    Row("prose-stripe-test", f"Use {_STRIPE_TEST} in the sandbox.", _STRIPE_TEST),
    Row("prose-xoxp", f"my user token is {_XOXP}", _XOXP),
    Row("prose-npm", f"publish with {_NPM}", _NPM),
    Row("prose-mailgun", f"Mailgun key {_MAILGUN} sends the receipts.", _MAILGUN),
    Row("prose-mailchimp", f"The newsletter uses {_MAILCHIMP}.", _MAILCHIMP),
    Row("prose-shopify", f"Shopify admin token: {_SHOPIFY}", _SHOPIFY),
    Row("prose-digitalocean", f"doctl auth init -t {_DIGITALOCEAN}", _DIGITALOCEAN),
    Row("prose-databricks", f"Databricks PAT {_DATABRICKS} expires in June.", _DATABRICKS),
    Row("prose-linear", f"Linear API key {_LINEAR}", _LINEAR),
    Row("prose-postman", f"postman key {_POSTMAN}", _POSTMAN),
    Row("prose-grafana", f"grafana service account token {_GRAFANA}", _GRAFANA),
    Row("prose-newrelic", f"New Relic user key {_NEWRELIC}", _NEWRELIC),
    Row("prose-square", f"square access token {_SQUARE} and secret {_SQUARE_SECRET}", _SQUARE),
    Row("prose-atlassian", f"Jira API token {_ATLASSIAN}", _ATLASSIAN),
    Row("prose-age", f"age identity {_AGE}", _AGE),
    Row("prose-doppler", f"doppler service token {_DOPPLER}", _DOPPLER),
    Row("prose-terraform", f"credentials app.terraform.io token {_TFC}", _TFC),
    Row("prose-discord", f"discord bot {_DISCORD}", _DISCORD),
    Row("prose-telegram", f"telegram bot {_TELEGRAM}", _TELEGRAM),
    Row("prose-twilio-sk", f"Twilio API key {_TWILIO_SK}", _TWILIO_SK),
    Row("prose-glpat-clone", f"clone with https://oauth2:{_GLPAT2}@gitlab.com/acme/app.git", _GLPAT2),
    Row("prose-totp", f"otpauth://totp/Acme:alice?secret={_TOTP}&issuer=Acme", _TOTP),
    Row("prose-query-token", f"GET https://api.example.com/export?access_token={_QUERY_TOKEN}&format=csv", _QUERY_TOKEN),
    Row("prose-azure-sas", f"https://acme.blob.core.windows.net/c/f.txt?sv=2022-11-02&sp=r&se=2030-01-01T00:00:00Z&sig={_AZ_SIG}", _AZ_SIG),
    Row("prose-webhook-secret", f"Webhook secret: {_WEBHOOK}", _WEBHOOK),
    # log lines
    Row("log-drf-token", f"> GET /api/v2/items HTTP/1.1\n> Authorization: Token {_HEX_TOKEN}\n< 200 OK", _HEX_TOKEN),
    Row("log-basic", f"[12:00:01] request headers: Authorization: Basic {_BASIC}", _BASIC),
    Row("log-jwt", f"2024-05-01T12:00:00Z DEBUG auth header=Bearer {_JWT}", _JWT),
    Row("log-password-kv", f"[2024-05-01 12:00:01] DEBUG connect host=db user=app password={_LOG_PW}", _LOG_PW),
    Row("log-pass-kv", f"INFO login ok user=alice pass={_LOG_PASS}", _LOG_PASS),
    Row("log-mongo", f"connecting to mongodb+srv://admin:{_MONGO_PW}@cluster0.ab1cd.mongodb.net/prod", _MONGO_PW),
    Row("log-redis", f"Connecting to redis://:{_REDIS_PW}@cache:6379/0", _REDIS_PW),
    Row("log-amqp", f"celery@worker ready. broker: amqps://worker:{_AMQP_PW}@mq.example.com/prod", _AMQP_PW),
    Row("log-session-cookie", f"Set-Cookie: sessionid={_SESSION_COOKIE}; Path=/; HttpOnly", _SESSION_COOKIE),
    Row("log-vault-legacy", f"vault: token {_VAULT_LEGACY} renewed, ttl=768h", _VAULT_LEGACY),
    # files shown whole
    Row("file-rsa", f"$ cat id_rsa\n{_RSA}", _RSA.splitlines()[1]),
    Row("file-pkcs8", f"key.pem:\n{_PKCS8}\n", _PKCS8.splitlines()[1]),
    Row("file-ec", _EC, _EC.splitlines()[1]),
    Row("file-openssh", f"~/.ssh/id_ed25519:\n{_OPENSSH}", _OPENSSH.splitlines()[1]),
    Row("file-pgp", _PGP, _PGP.splitlines()[1]),
    Row("file-encrypted-pem", _ENCRYPTED, _ENCRYPTED.splitlines()[-2]),
    Row("file-netrc-line", f"machine api.example.com login bob password {_NETRC_PW}", _NETRC_PW),
    Row("file-netrc-lines", f"machine api.heroku.com\n  login bob@example.com\n  password {_HEROKU}", _HEROKU),
    Row("file-aws-credentials", f"[default]\naws_access_key_id = {_AKIA}\naws_secret_access_key = {_AWS_SECRET}", _AWS_SECRET),
    # A second batch, written after the rules as a check that they generalise: before
    # the rules saw it, 28 of its 30 credentials were found and 1 of its 30 look-alikes
    # flagged (docs/security.md).
    Row("h-gh-actions-env", f"env:\n  DEPLOY_KEY: {_H1}", _H1),
    Row("h-ansible", f"ansible_become_password: {_H2}", _H2),
    Row("h-terraform-var", f'variable "db_password" {{\n  default = "{_H3}"\n}}', _H3),
    Row("h-php-define", f"define('AUTH_KEY', '{_H4}');", _H4),
    Row("h-java-props", f"spring.datasource.password={_H5}", _H5),
    Row("h-dotnet-conn", f"Server=db;Database=app;User Id=sa;Password={_H6};", _H6),
    Row("h-python-kwarg", f'client = Client(api_key="{_H7}")', _H7),
    Row("h-js-const", f"const SECRET = '{_H8}';", _H8),
    Row("h-go-struct", f'Password: "{_H9}",', _H9),
    Row("h-toml-secret", f'[auth]\nsecret = "{_H10}"', _H10),
    Row("h-gh-in-markdown", f"Use token `{_H11}` for the CI bot.", _H11),
    Row("h-slack-log", f"slack: posting with {_H12}", _H12),
    Row("h-ini-secret", f"[app]\nsigning_secret = {_H13}", _H13),
    Row("h-docker-run-env", f"docker run -e POSTGRES_PASSWORD={_H14} postgres:16", _H14),
    Row("h-kubectl-literal", f"kubectl create secret generic db --from-literal=password={_H15}", _H15),
    Row("h-heroku-config", f"heroku config:set STRIPE_SECRET={_H16}", _H16),
    Row("h-psql-url", f"psql postgresql://admin:{_H17}@10.0.0.7/prod", _H17),
    Row("h-aws-configure-id", f"AWS Access Key ID [None]: {_H18}", _H18),
    Row("h-aws-configure-secret", f"AWS Secret Access Key [None]: {_H19}", _H19),
    Row("h-prose-pass-colon", f"login for the router: user admin, pass: {_H20}", _H20),
    Row("h-prose-api-token", f"The API token is {_H21}", _H21),
    Row("h-anthropic-env", f"export ANTHROPIC_API_KEY={_H22}", _H22),
    Row("h-hf-cli", f"huggingface-cli login --token {_H23}", _H23),
    Row("h-gitlab-header", f"curl --header 'PRIVATE-TOKEN: {_H24}' https://gitlab.example.com/api/v4/projects", _H24),
    Row("h-wget-password", f"wget --user=bob --password={_H25} https://files.example.com/a.zip", _H25),
    Row("h-set-cookie-auth", f"Set-Cookie: auth_token={_H26}; Secure; HttpOnly", _H26),
    Row("h-jwt-cookie", f"Cookie: jwt={_H27}", _H27),
    Row("h-dsa-pem", _H28, _H28.splitlines()[1]),
    Row("h-yaml-password-quoted", f"redis:\n  password: '{_H29}'", _H29),
    Row("h-mongo-uri", f"MONGO_URL=mongodb://root:{_H30}@mongo:27017/?authSource=admin", _H30),
]  # fmt: skip


# --- look-alikes ----------------------------------------------------------------------

_SHA1 = rand("commit", 40, HEX)
_SHA256 = rand("sha256", 64, HEX)
_MD5 = rand("md5", 32, HEX)
_UUID = rand_uuid("uuid")
_SRI = rand_b64("sri", 64)
_SRI384 = rand_b64("sri384", 48)
_GOSUM = rand_b64("gosum", 32)
_NIX = rand_b64("nix", 32)
_SSH_PUB = "AAAAC3NzaC1lZDI1NTE5AAAAI" + rand("ed25519-pub", 43, B64)
_RSA_PUB = "AAAAB3NzaC1yc2EAAAADAQABAAABgQ" + rand("rsa-pub", 200, B64)
_CERT = pem("cert", "CERTIFICATE", 6)
_PUBKEY = pem("pubkey", "PUBLIC KEY", 4)
_PNG = "iVBORw0KGgoAAAANSUhEUgAA" + rand("png", 120, B64)
_DRIVE = "1" + rand("drive", 32, URLSAFE)
_GDOC = rand("gdoc", 44, URLSAFE)
_IPFS = "Qm" + rand("ipfs", 44, "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
_PK_LIVE = "pk_live_" + rand("pk", 24)
_ETH = "0x" + rand("eth", 40, HEX)
_PLAIN_B64 = b64("The quick brown fox jumps over the lazy dog")
_PLAIN_B64_2 = b64("deploy finished without errors on all three hosts")
_PLAIN_B64_3 = b64('{"page": 2, "per_page": 50, "sort": "created_at"}', urlsafe=True)

NEGATIVES: list[Row] = [
    # commit ids, hashes and digests
    Row("commit-prose", f"fixed in commit {_SHA1}"),
    Row("commit-short", "merged a1b2c3d into main (fast-forward)"),
    Row("commit-url", f"see https://github.com/acme/app/commit/{_SHA1}"),
    Row("blob-url", f"https://github.com/acme/app/blob/{_SHA1}/src/app.py#L42"),
    Row("actions-pin", f"- uses: actions/checkout@{_SHA1}"),
    Row("git-log", f"commit {_SHA1}\nAuthor: Alice <alice@example.com>\n\n    Fix flaky test"),
    Row("docker-digest", f"FROM python:3.11-slim@sha256:{_SHA256}"),
    Row("docker-pull", f"docker pull ghcr.io/acme/app@sha256:{_SHA256}"),
    Row("docker-push", f"latest: digest: sha256:{_SHA256} size: 2841"),
    Row("container-id", f"Container {_SHA256} started"),
    Row("sha256sum", f"{_SHA256}  release-1.4.2.tar.gz"),
    Row("md5sum", f"{_MD5}  backup.sql.gz"),
    Row("etag", f'ETag: "{_SHA1}"'),
    Row("gravatar", f"https://www.gravatar.com/avatar/{_MD5}?s=80"),
    Row("lfs-pointer", f"version https://git-lfs.github.com/spec/v1\noid sha256:{_SHA256}\nsize 1048576"),
    Row("package-lock", f'"integrity": "sha512-{_SRI}",'),
    Row("yarn-lock", f"  integrity sha512-{_SRI}"),
    Row("poetry-lock", f'{{file = "requests-2.31.0-py3-none-any.whl", hash = "sha256:{_SHA256}"}},'),
    Row("requirements-hash", f"requests==2.31.0 --hash=sha256:{_SHA256}"),
    Row("go-sum", f"golang.org/x/net v0.17.0 h1:{_GOSUM}"),
    Row("cargo-lock", f'checksum = "{_SHA256}"'),
    Row("html-sri", f'<script src="/app.js" integrity="sha384-{_SRI384}" crossorigin="anonymous"></script>'),
    Row("nix-hash", f'hash = "sha256-{_NIX}";'),
    Row("ethereum-address", f"send to {_ETH}"),
    # ids
    Row("uuid-log", f"request {_UUID} failed with 502"),
    Row("uuid-json", f'{{"id": "{_UUID}", "status": "done"}}'),
    Row("uuid-k8s", f"  uid: {_UUID}\n  resourceVersion: \"48213\""),
    Row("azure-subscription", f"az account set --subscription {_UUID}"),
    Row("aws-arn", "arn:aws:iam::123456789012:role/deploy-prod"),
    Row("aws-request-id", "RequestId: 9f3c2a1e-7b6d-4c5e-8f9a-0b1c2d3e4f5a Duration: 12.5 ms"),
    Row("snowflake-id", "message 1234567890123456789 deleted"),
    Row("pod-name", "pod web-7d4b9c8f6d-x2k9p restarted 3 times"),
    Row("ulid", "job 01HXZ3K7M9Q2R4T6V8W0Y1Z3A5 queued"),
    # URLs with hashes and ids
    Row("asset-hash", "https://cdn.example.com/assets/app.3f9a8b7c.js"),
    Row("chunk-name", "static/js/main.8f3e2a1b.chunk.js loaded in 120 ms"),
    Row("drive-url", f"https://drive.google.com/file/d/{_DRIVE}/view?usp=sharing"),
    Row("gdoc-url", f"https://docs.google.com/document/d/{_GDOC}/edit"),
    Row("ipfs-url", f"https://ipfs.io/ipfs/{_IPFS}"),
    Row("youtube-url", "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s"),
    Row("s3-url", f"https://acme-builds.s3.amazonaws.com/{_SHA1}/app.zip"),
    Row("npm-tarball", '"resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz"'),
    Row("pagination-cursor", f"GET /api/items?cursor={_PLAIN_B64_3}"),
    # base64 of plain words, public keys, certificates, data
    Row("b64-sentence", f"payload: {_PLAIN_B64}"),
    Row("b64-sentence-json", f'{{"note": "{_PLAIN_B64_2}"}}'),
    Row("ssh-public-key", f"ssh-ed25519 {_SSH_PUB} alice@laptop"),
    Row("ssh-authorized-keys", f"ssh-rsa {_RSA_PUB} deploy@ci"),
    Row("certificate", f"server.crt:\n{_CERT}"),
    Row("public-key-pem", _PUBKEY),
    Row("data-uri", f'<img src="data:image/png;base64,{_PNG}">'),
    Row("stripe-publishable", f"STRIPE_PUBLISHABLE_KEY={_PK_LIVE}"),
    # placeholders: a name, a reference or a template, never a value
    Row("placeholder-angle", "OPENAI_API_KEY=<your-key>"),
    Row("placeholder-env", "API_KEY=${API_KEY}"),
    Row("placeholder-changeme", "POSTGRES_PASSWORD=changeme"),
    Row("placeholder-stars", "password: ********"),
    Row("placeholder-xs", "aws_secret_access_key = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    Row("placeholder-aws-x", "AWS_ACCESS_KEY_ID=AKIAXXXXXXXXXXXXXXXX"),
    Row("placeholder-sk", "OPENAI_API_KEY=sk-..."),
    Row("placeholder-your", '"apiKey": "YOUR_API_KEY"'),
    Row("placeholder-actions", "token: ${{ secrets.NPM_TOKEN }}"),
    Row("placeholder-jinja", "password: \"{{ lookup('env', 'DB_PASSWORD') }}\""),
    Row("placeholder-vault-cmd", "export API_KEY=$(vault kv get -field=key secret/app)"),
    Row("placeholder-bearer", 'curl -H "Authorization: Bearer $TOKEN" https://api.example.com'),
    Row("placeholder-bearer-angle", "Authorization: Bearer <token>"),
    Row("placeholder-curl-vars", 'curl -u "$CI_USER:$CI_PASS" https://ci.example.com'),
    Row("placeholder-url", "postgres://user:<password>@host:5432/db"),
    Row("placeholder-docker-stdin", "docker login -u bot --password-stdin < ~/.config/token.txt"),
    Row("placeholder-echo-var", 'echo "$CR_PAT" | docker login ghcr.io -u bot --password-stdin'),
    # commands that look like credentials but are not
    Row("mysql-prompt", "mysql -u root -p"),
    Row("mysql-prompt-db", "mysql -u root -p app_production"),
    Row("ssh-port", "ssh -p 2222 deploy@host"),
    Row("docker-run-after-login", "docker login ghcr.io && docker run -p 8080:80 ghcr.io/acme/app"),
    Row("mkdir-p", "mkdir -p /var/lib/app/cache"),
    Row("docker-user", "docker run -u 1000:1000 -v $PWD:/src image:latest"),
    Row("rsync-flags", "rsync -pav --delete build/ host:/srv/app/"),
    Row("git-format", "git log --pretty=format:%H -n 5"),
    Row("pip-index", "pip install --index-url https://pypi.org/simple/ requests"),
    Row("kubectl-secret", "kubectl get secret db -o jsonpath='{.data.password}'"),
    Row("password-flag-help", "  --password TEXT  Password for the registry (read from a prompt if omitted)"),
    # settings that name a secret without holding one
    Row("token-count", "max_tokens: 4096"),
    Row("token-usage", "usage: prompt_tokens=1532 completion_tokens=211 total_tokens=1743"),
    Row("password-policy", "password_min_length: 12"),
    Row("django-hashers", "PASSWORD_HASHERS = ['django.contrib.auth.hashers.Argon2PasswordHasher']"),
    Row("cache-key", "CACHE_KEY=user_profile_v2"),
    Row("sort-key", "sort_key: created_at"),
    Row("key-path", "ssh_key_path: ~/.ssh/id_ed25519"),
    Row("secret-path", "secret_file: /run/secrets/db_password"),
    Row("key-id", f"key_id: {_UUID}"),
    Row("public-key-setting", f"public_key: ssh-ed25519 {_SSH_PUB}"),
    # prose about secrets
    Row("prose-rotate", "Rotate the API key every 90 days and never commit it."),
    Row("prose-keychain", "Store the token in the OS keychain, not in a dotfile."),
    Row("prose-key-length", "The secret key must be 32 bytes long."),
    Row("prose-key-error", "the key error: quota exceeded for this project"),
    Row("prose-token-budget", "token budget: 4096 tokens per request"),
    Row("prose-vault-prefix", "Vault service tokens begin with hvs. and batch tokens with hvb."),
    Row("prose-gh-prefix", "GitHub classic tokens start with ghp_ and fine-grained ones with github_pat_."),
    Row("prose-password-hashed", "the password is argon2id-hashed before it is stored"),
    # words, paths, versions, colors
    Row("long-word", "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word."),
    Row("java-class", "AbstractSingletonProxyFactoryBeanDefinitionRegistryPostProcessor failed"),
    Row("camel-method", "handleUserAuthenticationTokenRefreshRequest2 threw a timeout"),
    Row("test-name", "test_apply_reflection_rejects_duplicate_in_batch_when_names_collide PASSED"),
    Row("file-path", "/home/alice/projects/acme/src/services/authentication/TokenRefresher.py"),
    Row("aws-credentials-path", "credentials are read from ~/.aws/credentials"),
    Row("css-colors", "color: #3f9a8b; background: #FFAA00; border-color: #1e293b;"),
    Row("semver", "upgraded from 1.2.3-rc.1+build.5 to 2.0.0-beta.12"),
    Row("timestamp", "2024-05-01T12:34:56.789Z build started"),
    Row("ipv6", "listening on [2001:db8::ff00:42:8329]:8443"),
    Row("mac-address", "eth0 link/ether 02:42:ac:11:00:02"),
    Row("scikit", "pip install scikit-learn sk-learn-contrib imbalanced-learn"),
    Row("hf-function", "from huggingface_hub import hf_hub_download"),
    # The second batch's look-alikes (see above).
    Row("h-git-rev-parse", f"$ git rev-parse HEAD\n{rand('n1', 40, HEX)}"),
    Row("h-pip-freeze-hash", f"certifi==2024.2.2 \\\n    --hash=sha256:{rand('n2', 64, HEX)}"),
    Row("h-npm-shasum", f"npm notice shasum: {rand('n3', 40, HEX)}"),
    Row("h-npm-integrity", f"npm notice integrity: sha512-{rand('n4', 20, B64)}[...]{rand('n4b', 10, B64)}"),
    Row("h-k8s-configmap", "apiVersion: v1\nkind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n  FEATURE_FLAGS: search,export"),
    Row("h-docker-image-id", f"Successfully built {rand('n5', 12, HEX)}"),
    Row("h-jira-key", "Fixed in PROJ-12345 and PROJ-12346"),
    Row("h-stack-trace", 'File "/usr/lib/python3.11/site-packages/requests/adapters.py", line 519, in send'),
    Row("h-base64-png-small", "favicon: iVBORw0KGgoAAAANSUhEUgAAABAAAAAQ"),
    Row("h-uuid-list", " ".join(rand_uuid(f"n6{i}") for i in range(3))),
    Row("h-random-word-id", "deployment happy-tiger-42 finished"),
    Row("h-hash-table", f"| file | sha1 |\n| app.js | {rand('n7', 40, HEX)} |"),
    Row("h-key-value-config", "max_connections = 100\ntimeout_seconds = 30\nretry_policy = exponential"),
    Row("h-oauth-doc", "Exchange the authorization code for an access token at /oauth/token."),
    Row("h-token-endpoint", "TOKEN_URL=https://auth.example.com/oauth/token"),
    Row("h-password-reset", "Password reset links expire after 30 minutes."),
    Row("h-secret-manager-ref", "DB_PASSWORD=arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"),
    Row("h-vault-path", "vault kv get secret/data/payments/stripe"),
    Row("h-env-template", "API_KEY=\nSECRET_KEY=\nDATABASE_URL="),
    Row("h-sql-hash", "SELECT id FROM users WHERE token_hash = $1 AND expires_at > now()"),
    Row("h-go-import", "import github.com/aws/aws-sdk-go-v2/credentials/stscreds"),
    Row("h-trace-ids", "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7"),
    Row("h-rsa-public-pem", pem("n8", "RSA PUBLIC KEY", 3)),
    Row("h-prose-rotation", "The API key for staging was rotated on Monday by the platform team."),
    Row("h-mixed-identifier", "class HTTPRequestHandlerForOAuth2TokenRefresh(BaseHandler): pass"),
    Row("h-overlay-path", f"/var/lib/docker/overlay2/{rand('n9', 64, HEX)}/merged"),
    Row("h-cuid", "order cl9ebqhxk00003b600tymydho created"),
    Row("h-nanoid", "short link https://example.com/s/V1StGXR8_Z5jdHi6B-myT"),
    Row("h-password-field", '<input type="password" name="password" autocomplete="current-password">'),
    Row("h-curl-no-auth", "curl -sSL https://get.example.com/install.sh -o install.sh"),
]  # fmt: skip


# Credentials the detector is known to miss, each with the reason (docs/security.md).
KNOWN_MISSES: dict[str, str] = {
    "h-terraform-var": 'the value\'s name is on another line (`variable "db_password"`)',
}


@dataclass(frozen=True)
class Figures:
    """The detector's score on the table."""

    positives: int
    negatives: int
    missed: tuple[str, ...]  # labels of credentials not found or not fully masked
    false_positives: tuple[str, ...]  # labels of look-alikes flagged

    @property
    def recall(self) -> float:
        return 1 - len(self.missed) / self.positives

    @property
    def false_positive_rate(self) -> float:
        return len(self.false_positives) / self.negatives


def leaks(row: Row, masked: str) -> bool:
    """Whether `masked` still shows the row's credential: its first or last 8 characters
    (all of it when shorter)."""
    assert row.secret is not None
    return any(part in masked for part in (row.secret[:8], row.secret[-8:]))


def caught(row: Row) -> bool:
    """A credential row is flagged and masked away; a look-alike row is flagged at all."""
    if not find_secrets(row.text):
        return False
    return row.secret is None or not leaks(row, mask_secrets(row.text))


def score() -> Figures:
    """Recall over the credentials, false-positive rate over the look-alikes."""
    return Figures(
        positives=len(POSITIVES),
        negatives=len(NEGATIVES),
        missed=tuple(r.label for r in POSITIVES if not caught(r)),
        false_positives=tuple(r.label for r in NEGATIVES if caught(r)),
    )


def main(argv: list[str]) -> None:
    figures = score()
    print(
        f"credentials: {figures.positives}, found {figures.positives - len(figures.missed)}, "
        f"recall {figures.recall:.3f}\n"
        f"look-alikes: {figures.negatives}, flagged {len(figures.false_positives)}, "
        f"false-positive rate {figures.false_positive_rate:.3f}"
    )
    if "-v" in argv:
        for label in figures.missed:
            print(f"missed: {label} ({KNOWN_MISSES.get(label, 'not a known miss')})")
        for label in figures.false_positives:
            print(f"false positive: {label}")


if __name__ == "__main__":
    main(sys.argv[1:])
