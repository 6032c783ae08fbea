"""Everything that talks to Azure Resource Manager.

Import this package only where Azure is needed: the SDK costs ~0.5 s to import.
"""

import logging
from typing import Any

# azure-identity logs WARNING lines when a sign-in fails; without a handler Python prints them on
# stderr above azrdp's own one-line error. They reach the --debug log (the root handler) still.
logging.getLogger("azure").addHandler(logging.NullHandler())


def wire_dict(model: Any) -> dict[str, Any]:
    """An SDK model (or a dict already) as ARM's camelCase wire JSON; None becomes {}."""
    if model is None:
        return {}
    return model.as_dict() if hasattr(model, "as_dict") else dict(model)
