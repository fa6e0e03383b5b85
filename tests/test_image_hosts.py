"""Remote images (issue 13, finding 5): the pages' CSP lets images load from this site, inline data and the
hosts of CHATSITE_IMAGE_HOSTS only, and that setting cannot carry anything into the CSP but host names. (What
the page shows instead of an image from elsewhere is tested in the browser: tests/test_browser.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from chatsite.settings import _image_hosts

ROOT = Path(__file__).resolve().parent.parent


def img_src(response) -> list[str]:
    policy = response["Content-Security-Policy"]
    return next(d for d in policy.split(";") if d.strip().startswith("img-src")).split()[1:]


def test_by_default_pages_load_no_image_from_another_site(alice, alice_chat, settings):
    from django.test import Client

    assert settings.CHATSITE_IMAGE_HOSTS == []
    client = Client()
    client.force_login(alice)
    for url in (f"/c/{alice_chat.id}", "/documents", "/login"):
        assert img_src(client.get(url)) == ["'self'", "data:", "blob:"], url
    page = client.get(f"/c/{alice_chat.id}").content.decode()
    assert '"imageHosts": []' in page  # what the page's renderer allows, from the boot data (not a script)


def test_hosts_are_normalised():
    given = [" Images.Example.com ", "https://cdn.example.org/", "img.example:8443", "*.example.net", ""]
    assert _image_hosts(given) == ["images.example.com", "cdn.example.org", "img.example:8443", "*.example.net"]


@pytest.mark.parametrize(
    "entry",
    [
        "a.example; script-src *", "'self'", "*", "https:", "http://a.example", "a.example/path", "a.example?x",
        "user@a.example", "a example", "a.example\nscript-src *", "-a.example", "a-.example", "*.com", "a.example:0",
        "a.example:99999", "a.example:", "a..example", "data:", "'unsafe-inline'", "exämple.com", "a.example,b",
    ],
)  # fmt: skip
def test_anything_but_a_host_name_stops_the_start(entry):
    with pytest.raises(ImproperlyConfigured, match="CHATSITE_IMAGE_HOSTS"):
        _image_hosts([entry])


def test_the_setting_reaches_the_csp_and_a_bad_one_refuses_to_start():
    code = "from django.conf import settings; print(settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['img-src'])"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings"}

    def run(value: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            cwd=ROOT,
            env={**env, "CHATSITE_IMAGE_HOSTS": value},
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = run("images.example.com,*.cdn.example")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == (
        "[\"'self'\", 'data:', 'blob:', 'https://images.example.com', 'https://*.cdn.example']"
    )
    bad = run("images.example.com; script-src https://evil.example")
    assert bad.returncode != 0 and "is not a host name" in bad.stderr
