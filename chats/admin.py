"""The operators' console for users, chats and messages."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from chats.models import Chat, Message, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "is_staff", "is_active", "date_joined", "last_login"]


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created_at", "role", "status", "model_id", "short_content"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["created_at"]

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:120]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "model_id", "workflow", "created_at", "updated_at"]
    list_filter = ["model_id", "created_at"]
    search_fields = ["id", "title", "owner__username"]
    list_select_related = ["owner", "workflow"]
    raw_id_fields = ["owner"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "chat",
        "role",
        "status",
        "model_id",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
    ]
    list_filter = ["status", "role", "model_id", "finish_reason"]
    search_fields = ["id", "chat__id", "chat__title", "chat__owner__username"]
    list_select_related = ["chat"]
    date_hierarchy = "created_at"
    # What people wrote and what the model answered is a record: operators read it, never edit it.
    readonly_fields = [
        "id",
        "chat",
        "role",
        "content",
        "model_id",
        "workflow",
        "parent",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "error",
        "tool_calls",
        "sources",
        "created_at",
        "started_at",
        "completed_at",
    ]
    fields = ["status", *readonly_fields]

    def has_add_permission(self, request) -> bool:
        return False
