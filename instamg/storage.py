"""Static files storage for production: hashed names, compressed, ES modules included."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    # Rewrite `import ... from "./x.js"` to hashed names too, so every module of the web
    # client can be cached forever, not only the entry point.
    support_js_module_import_aggregation = True
