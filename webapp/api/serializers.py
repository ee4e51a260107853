"""Serializers of the REST API."""

from __future__ import annotations

from rest_framework import serializers

from webapp.core.models import Case


class CaseSerializer(serializers.ModelSerializer[Case]):
    study_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Case
        fields = ["code", "split", "readers_blinded", "is_synthetic", "study_count", "created_at"]
        read_only_fields = fields
