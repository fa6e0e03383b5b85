"""ASGI entry point, served by daphne: Django HTTP (the API and the SSE relay), seed 000's Connect-RPC service
(protocols.connect) and Channels WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

django_asgi_app = get_asgi_application()

import logging  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up first)
from django.conf import settings  # noqa: E402

if settings.CHATSITE_EMBEDDED:
    from pipelines import embedded

    embedded.start()
logging.getLogger("chatsite").warning(
    "chatsite is running in %s mode (%s)",
    "embedded" if settings.CHATSITE_EMBEDDED else "full",
    settings.CHATSITE_MODE_REASON,
)

from protocols.connect.service import connect_application, route  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Seed 000's Connect-RPC procedures (and POST /v1/stream) go to Connect for Python, the rest to Django.
        "http": route(django_asgi_app, connect_application()),
        # No WebSocket consumers yet: the stream is SSE over HTTP. The router is here so they can be added.
        "websocket": URLRouter([]),
    }
)
