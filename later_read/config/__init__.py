"""The settings: `settings` (Settings, TOML + environment loading), `env` (the LATER_READ__* overlay),
`checks` (each setting's check and bound), `urls` (URL and address checks)."""
