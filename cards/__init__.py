"""Card templates: models, the sandboxed renderer, per-route payloads, SMS fallback."""
