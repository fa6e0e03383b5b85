"""Request parsing and response shapes of the workflows API (camelCase fields)."""

from rest_framework import serializers

from pipelines.access import usable_models
from pipelines.models import ModelConfig, Workflow
from pipelines.steps import validate_steps


class WorkflowSerializer(serializers.ModelSerializer):
    """A workflow: `shared` ones (no owner) are visible to everyone and managed by staff."""

    systemPrompt = serializers.CharField(source="system_prompt", required=False, allow_blank=True, max_length=20000)
    modelId = serializers.SlugRelatedField(
        source="model", slug_field="model_id", queryset=ModelConfig.objects.none(), required=False, allow_null=True
    )
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    maxTokens = serializers.IntegerField(
        source="max_tokens", required=False, allow_null=True, min_value=1, max_value=100000
    )
    steps = serializers.JSONField(required=False, help_text="Typed steps; see pipelines.steps.")
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
        return validate_steps(value)

    def get_fields(self):
        fields = super().get_fields()
        fields["modelId"].queryset = usable_models()
        return fields
