"""Serializer fields that take JSON strings only, for every API serializer (chats, pipelines, knowledge, auth).

DRF's string fields turn numbers into strings (`"content": 1` becomes "1"), and its UUID field takes an
integer as a UUID's 128 bits. A client that sends a number where the API documents a string has a bug or is
probing: it gets 400 with the field named, not a guess. The check lives here, once (`StrictString`); every
API serializer declares its string fields with these classes and derives its model fields through
`StrictModelSerializer`. tests/test_strict_strings.py walks every serializer to keep it so.

Also refused, in the same place: text that cannot be stored as UTF-8 (a lone surrogate such as "\\ud800",
which JSON can spell but PostgreSQL cannot hold) and text with a NUL character (which PostgreSQL refuses).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from rest_framework import serializers
from rest_framework.fields import empty


def json_kind(value: Any) -> str:
    """What a parsed JSON (or form) value is, in words: 'a number', 'a boolean', 'an object'..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return "not text"


class StrictString:
    """Mixin for a DRF field: the value must be a `str` (null and absence stay the field's own business).

    Raises (through `run_validation`):
        serializers.ValidationError: `not_a_string` for anything else, `unencodable` for text with a lone
            surrogate.
    """

    default_error_messages = {
        "not_a_string": "Must be a string, not {kind}.",
        "unencodable": "Must be valid Unicode text (it holds a lone surrogate).",
        "null_character": "Must not hold NUL characters (\\x00).",
    }

    def run_validation(self, data: Any = empty) -> Any:
        if data is not empty and data is not None:
            if not isinstance(data, str):
                self.fail("not_a_string", kind=json_kind(data))
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                self.fail("unencodable")
            if "\x00" in data:
                # PostgreSQL cannot hold it in text, nor look it up: a lookup field would answer 500.
                self.fail("null_character")
        return super().run_validation(data)


class StrictCharField(StrictString, serializers.CharField):
    """`serializers.CharField` for strings only."""


class StrictSlugField(StrictString, serializers.SlugField):
    """`serializers.SlugField` for strings only."""


class StrictEmailField(StrictString, serializers.EmailField):
    """`serializers.EmailField` for strings only."""


class StrictURLField(StrictString, serializers.URLField):
    """`serializers.URLField` for strings only."""


class StrictChoiceField(StrictString, serializers.ChoiceField):
    """`serializers.ChoiceField` whose choices are strings: `1` does not match the choice "1"."""


class StrictUUIDField(StrictString, serializers.UUIDField):
    """`serializers.UUIDField` for UUIDs written as strings (DRF also takes an integer as one)."""


class StrictSlugRelatedField(StrictString, serializers.SlugRelatedField):
    """`serializers.SlugRelatedField` whose slug is a string."""


class StrictModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose fields derived from text, slug, e-mail, URL, UUID and choice model fields take
    strings only (the Strict* fields above)."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.SlugField: StrictSlugField,
        models.EmailField: StrictEmailField,
        models.URLField: StrictURLField,
        models.UUIDField: StrictUUIDField,
    }
    serializer_choice_field = StrictChoiceField
