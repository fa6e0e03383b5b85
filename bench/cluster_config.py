"""What bench/cluster.py writes for its hosts: the processes' lifecycle timings, the seed script, and nginx's
configuration (the README's deployment guide describes the same)."""

from __future__ import annotations


def lifecycle_env() -> dict[str, str]:
    """The live tests' short lifecycle timings (tests/live.py LIFECYCLE_ENV: heartbeats, watchdog, requeue, no
    send limits), with time limits that let a reply wait out the chaos run's outages."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from tests.live import LIFECYCLE_ENV

    return {**LIFECYCLE_ENV, "CHATSITE_TASK_SOFT_TIME_LIMIT": "60", "CHATSITE_TASK_TIME_LIMIT": "90"}


SEED = """
from chats.models import User
from pipelines.models import ModelConfig
User.objects.create_user({username!r}, password={password!r})
ModelConfig.objects.update_or_create(model_id={model_id!r}, defaults=dict(display_name="Scripted", provider="scripted",
    context_window=100000, default_max_tokens=10000, options={options!r}))
"""

NGINX_CONF = """\
# The load balancer of bench/cluster.py, as the README's deployment guide describes it.
worker_processes 1;
worker_rlimit_nofile 20000;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    client_max_body_size 25m;
    upstream chatsite {{
        # Passive health checks (nginx OSS has no active ones): a server that refuses a connection or times out
        # is skipped for fail_timeout, and the request goes to the next one.
{servers}
        keepalive 64;
    }}
    server {{
        listen {listen}:80 backlog=4096;
        # Sending a message: when the web process dies before answering, nginx sends the POST on to another
        # one (non_idempotent). Safe here: a send with an Idempotency-Key streams the reply the first one
        # started, and without one a second send in the chat is refused (409 reply_in_progress), never doubled.
        location ~ ^/api/chats/[^/]+/messages/stream$ {{
            proxy_pass http://chatsite;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            add_header X-Chatsite-Upstream $upstream_addr always;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout non_idempotent;
            proxy_next_upstream_tries 3;
            gzip off;
        }}
        location / {{
            proxy_pass http://chatsite;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Which web process answered (for the tests and for operators reading a client's trace).
            add_header X-Chatsite-Upstream $upstream_addr always;
            proxy_buffering off;          # chatsite also sends X-Accel-Buffering: no on streams
            proxy_cache off;
            proxy_read_timeout 1h;        # replies can stream for a while; pings keep the line alive
            proxy_connect_timeout 2s;
            # Only failures to reach a web process move a request on; a 503 (database_unavailable) is the
            # answer, the same from every web process.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            gzip off;
        }}
    }}
}}
"""
