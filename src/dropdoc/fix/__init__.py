"""Changing the system: plan -> apply -> verify -> persist or roll back, with a journal.

- plan.py: a diagnosis (live or its JSON) -> changes with current/proposed values and why
- changes.py: one small class per kind (sysctl, txqueuelen, qdisc limit, ring)
- sysctl.py: validated sysctl reads/writes inside a network namespace
- apply.py: journaled apply, restore, rollback of a run from the journal alone
- verify.py: before/after drop rates per finding; "pending restart of pid N"
- persist.py: /etc/sysctl.d/90-dropdoc.conf
- fixer.py: the whole run and its exit code; render.py: text output
"""
