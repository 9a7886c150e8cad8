"""The `signoff` subcommands, one module each; the command line is assembled from `COMMANDS`.

Every module follows the convention of `signoff.client.cmd`: `register(commands)` adds its
subparser and sets `run`; options come from `signoff.client.cmd.settings` (flag, else
environment, else default); exit codes from `signoff.client.cmd.exitcodes`.
"""

# In the order `signoff --help` lists them; `signoff.client.cmd` modules live in the client
# package, which cannot import the service.
COMMANDS = (
    "signoff.cmd.serve",
    "signoff.client.cmd.check",
    "signoff.cmd.test",
    "signoff.cmd.lint",
    "signoff.client.cmd.approvals",
    "signoff.client.cmd.policy",
    "signoff.cmd.audit",
    "signoff.cmd.replay",
    "signoff.cmd.bundle",
    "signoff.cmd.notify",
    "signoff.cmd.dev",
    "signoff.cmd.dev_certs",
    "signoff.cmd.keys",
)
