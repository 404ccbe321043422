"""The in-process library services import to emit exactly what the catalog promises.

    obs = Observability.from_catalog(catalog, component="gateway", data_dir=Path("var/spool"), node="n1")
    instrument(app, obs, admin_token=token)   # middleware + /_health /_metrics /_trace /_reload /_flags
    raise ApiError("BACKPRESSURE", retry_after_ms=250)
"""

from collectors.errortoken import ApiError
from collectors.observability import Observability
from collectors.endpoints import instrument

__all__ = ["ApiError", "Observability", "instrument"]
