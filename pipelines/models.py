"""Models users can pick, and the workflows that produce replies (DESIGN.md section 2)."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models


def api_key_env_field() -> models.CharField:
    """A field naming the environment variable that holds a provider's API key: keys are never stored."""
    return models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[RegexValidator(r"^[A-Z_][A-Z0-9_]*$", "An environment variable name, such as OPENAI_API_KEY.")],
        help_text="Name of the environment variable holding the API key (never the key itself).",
    )


class ModelConfig(models.Model):
    """A model users can pick; `model_id` is its public id (the `modelId` of the API).

    Secrets are never stored here: `api_key_env` names the environment variable that holds the key.
    """

    class Provider(models.TextChoices):
        LLAMA_CPP = "llama_cpp", "Local GGUF model (llama.cpp)"
        OPENAI = "openai", "OpenAI-compatible server"
        SCRIPTED = "scripted", "Scripted (deterministic tests)"

    model_id = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", "Letters, digits and . _ : / - only.")],
        help_text="Public id that clients send as modelId.",
    )
    display_name = models.CharField(max_length=200)
    provider = models.CharField(max_length=32, choices=Provider.choices)
    provider_model = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="The provider's own model name; for llama_cpp a GGUF path, empty for the embedded SmolLM2.",
    )
    base_url = models.URLField(blank=True, default="")
    api_key_env = api_key_env_field()
    context_window = models.PositiveIntegerField(default=2048, help_text="Tokens the prompt and reply may use.")
    default_temperature = models.FloatField(default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    default_max_tokens = models.PositiveIntegerField(default=512, help_text="Most tokens in one reply.")
    options = models.JSONField(default=dict, blank=True, help_text="Provider-specific settings.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name"]
        verbose_name = "model"

    def __str__(self) -> str:
        return f"{self.display_name} ({self.model_id})"

    @property
    def lane(self) -> str:
        """The worker lane its replies run in (chatsite.jobs): `local` for a model this server runs itself
        (CPU-bound, one loaded model per process), `network` for one it reaches over the network."""
        return "local" if self.provider in LOCAL_PROVIDERS else "network"


# Providers that generate in the worker's own process (CPU-bound): their replies go to the `local` lane.
LOCAL_PROVIDERS = frozenset({ModelConfig.Provider.LLAMA_CPP})


def reply_lane(model: ModelConfig, steps: list | None) -> str:
    """The lane of a reply on `model` whose workflow runs `steps` (the client's or the workflow's; a step may
    name a model of its own): `local` if any of those models is local, else `network`. Reads the database only
    when a step names a model other than `model`."""
    if model.lane == "local":
        return "local"
    others = {s.get("model") for s in steps or () if isinstance(s, dict) and s.get("model")} - {model.model_id}
    if others and ModelConfig.objects.filter(model_id__in=others, provider__in=LOCAL_PROVIDERS).exists():
        return "local"
    return "network"


class Workflow(models.Model):
    """How a reply is produced: for now a system prompt and generation defaults; typed steps come later.

    `owner` null means shared with every user (managed by staff in the admin).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="workflows"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    # The typed steps (pipelines.steps): validated on save by the API and the admin. Empty means the
    # classic pair: the system prompt above, then one generate step with the settings below.
    steps = models.JSONField(default=list, blank=True)
    model = models.ForeignKey(
        ModelConfig,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Model used when the send names none of its own.",
    )
    temperature = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None


class Connector(models.Model):
    """A database that `sql` steps and the `sql_query` tool may read (PostgreSQL), created by staff.

    The database URL is never stored: `url_env` names the environment variable that holds it (a URL whose
    role may only read: `pipelines.connectors` refuses roles that may do more). A connector is usable only by
    the `users` and `groups` it is granted to (`pipelines.access.usable_connectors`), never by everyone;
    shared workflows (written by staff) may still name any active connector in their `sql` steps.
    """

    name = models.SlugField(max_length=100, unique=True, help_text="How workflows and the sql_query tool name it.")
    description = models.TextField(blank=True, default="", help_text="What it holds (shown to the model).")
    url_env = models.CharField(
        max_length=100,
        validators=[RegexValidator(r"^[A-Z_][A-Z0-9_]*$", "An environment variable name, such as SALES_DB_URL.")],
        help_text="Name of the environment variable holding the database URL (never the URL itself).",
    )
    statement_timeout_ms = models.PositiveIntegerField(default=5000, help_text="Milliseconds one query may run.")
    max_rows = models.PositiveIntegerField(default=200, help_text="Most rows a query returns.")
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="granted_connectors",
        help_text="Users who may name it in their workflows' sql steps and query it with the sql_query tool.",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="granted_connectors",
        help_text="Groups whose members may use it, as the users above.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
