"""The dashboard's routes, one :class:`fastapi.APIRouter` per area (``api.build_app``
includes them in order); their shared dependencies are in :mod:`.deps`."""
