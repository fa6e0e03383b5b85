"""Settings come from the environment, and every variable read is documented in .env.example."""

import re
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parent.parent


def test_every_environment_variable_is_listed_in_env_example():
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', (ROOT / "chatsite/settings.py").read_text()))
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert read, "no env reads found"
    assert read - listed == set(), f"not in .env.example: {sorted(read - listed)}"


def test_env_example_can_be_copied_to_dotenv_as_it_is():
    # django-environ does not strip inline comments: a "# ..." after a value would become the value.
    env = environ.Env()
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    assert values["DEBUG"] == "false" and env.parse_value(values["CHATSITE_SSE_PING_SECONDS"], float) == 15.0
    assert all("#" not in v for v in values.values()), "inline comments would become part of the value"
