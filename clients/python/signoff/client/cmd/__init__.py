"""The client's commands (`check`, `approvals`, `policy`), one module each.

The convention every `signoff` command follows, here and in the service's `signoff.cmd`: a
module has `register(commands)`, which adds its subparser to `commands` and sets
`run=<function taking the parsed arguments, returning the exit code>`. Options come from
`settings` (flag, else environment, else default); exit codes from `exitcodes`.
"""
