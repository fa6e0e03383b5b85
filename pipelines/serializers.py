"""Request parsing and response shapes of the workflows API (camelCase fields)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chats.fields import StrictCharField, StrictModelSerializer, StrictSlugRelatedField
from pipelines.access import usable_models
from pipelines.models import ModelConfig, Workflow
from pipelines.steps import validate_steps


@extend_schema_field({"type": "array", "items": {"type": "object"}, "description": "Typed steps (pipelines.steps)."})
class StepsField(serializers.JSONField):
    """A workflow's steps: any JSON here; `validate_steps` checks the shape and explains what is wrong."""


class ModelIdField(StrictSlugRelatedField):
    """A modelId, or null; an empty string is refused (DRF would quietly turn it into null)."""

    def run_validation(self, data=serializers.empty):
        if data == "":
            raise serializers.ValidationError("Give a modelId, or null for none.")
        if isinstance(data, str) and "\x00" in data:
            # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the lookup.
            raise serializers.ValidationError("Null characters are not allowed.")
        return super().run_validation(data)


class WorkflowSerializer(StrictModelSerializer):
    """A workflow: `shared` ones (no owner) are visible to everyone and managed by staff."""

    systemPrompt = StrictCharField(source="system_prompt", required=False, allow_blank=True, max_length=20000)
    modelId = ModelIdField(
        source="model", slug_field="model_id", queryset=ModelConfig.objects.none(), required=False, allow_null=True
    )
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    maxTokens = serializers.IntegerField(
        source="max_tokens", required=False, allow_null=True, min_value=1, max_value=100000
    )
    steps = StepsField(required=False)
    isActive = serializers.BooleanField(source="is_active", required=False)
    shared = serializers.BooleanField(source="is_shared", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = Workflow
        fields = [
            "id", "name", "description", "systemPrompt", "steps", "modelId", "temperature", "maxTokens",
            "isActive", "shared", "createdAt", "updatedAt",
        ]  # fmt: skip
        read_only_fields = ["id"]
        extra_kwargs = {"description": {"required": False, "max_length": 2000}}

    def validate_steps(self, value: object) -> list[dict]:
        # A new workflow is the caller's; an existing one keeps its owner (None: shared).
        owner = self.instance.owner if self.instance is not None else self.context["request"].user
        return validate_steps(value, owner=owner)

    def get_fields(self):
        fields = super().get_fields()
        fields["modelId"].queryset = usable_models()
        return fields
