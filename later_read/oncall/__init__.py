"""The on-call commands: `check`, `show`, `rerun`, `sent`, `day` (read-mostly; `rerun` walks one user)."""
