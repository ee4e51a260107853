"""REST API endpoints of the research app: studies, jobs, model versions, predictions, ground
truth, adjudications and exports, under ``/api/v1/``.

Blinding: a user with the reader role sees predictions, ground truth and other readers'
adjudications only for cases that are not blinded or that they have labelled themselves.
Errors of these endpoints have the body ``{"code": ..., "message": ...}``.

tests/webapp/test_api_schemathesis.py checks the responses against the OpenAPI schema.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from webapp.core import roles
from webapp.core.audit import client_address_from_request
from webapp.core.models import Adjudication, Case, GroundTruth, HyperdensityLabel, Study
from webapp.core.services import ClientContext, ServiceError, record_ground_truth
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction
from webapp.research import exports
from webapp.research.worklist import is_blinded_reader

SERVICE_ERROR_STATUS = {
    "role_required": status.HTTP_403_FORBIDDEN,
    "stale_version": status.HTTP_409_CONFLICT,
}


def error_body_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    """Return DRF's response with the body rewritten as ``{"code", "message"}``."""
    if isinstance(error, ServiceError):
        http_status = SERVICE_ERROR_STATUS.get(error.code, status.HTTP_400_BAD_REQUEST)
        return Response({"code": error.code, "message": error.message}, status=http_status)
    response = exception_handler(error, context)
    if response is None:
        return None
    # DRF's handler turns Django's Http404 and PermissionDenied into these two API errors.
    if isinstance(error, Http404):
        error = exceptions.NotFound()
    elif isinstance(error, PermissionDenied):
        error = exceptions.PermissionDenied()
    if isinstance(error, exceptions.APIException):
        codes = error.get_codes()
        code = codes if isinstance(codes, str) else "invalid"
        detail = response.data
        if isinstance(detail, dict) and set(detail) == {"detail"}:
            message = str(detail["detail"])
        else:
            message = json.dumps(detail)
        response.data = {"code": code, "message": message}
    return response


class ErrorBodyMixin:
    """Use ``error_body_handler`` for this view's errors."""

    def get_exception_handler(self) -> Any:
        return error_body_handler


def visible_cases_filter(user: Any, prefix: str = "case") -> Q:
    """Return a filter on ``<prefix>`` that hides blinded cases from readers who have not labelled."""
    if not is_blinded_reader(user):
        return Q()
    own = Adjudication.objects.filter(case=OuterRef(f"{prefix}__pk"), reader=user)
    return Q(**{f"{prefix}__readers_blinded": False}) | Q(Exists(own))


class StudySerializer(serializers.ModelSerializer[Study]):
    case: serializers.SlugRelatedField[Case] = serializers.SlugRelatedField(
        slug_field="code", read_only=True
    )

    class Meta:
        model = Study
        fields = [
            "id",
            "case",
            "role",
            "study_instance_uid",
            "hours_after_mt",
            "out_of_window",
            "modality",
            "created_at",
        ]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer[ModelVersion]):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "kind",
            "version",
            "sha256",
            "params",
            "metrics",
            "training_cohort",
            "intended_use",
            "registered_at",
            "is_promoted",
        ]
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer[InferenceJob]):
    case = serializers.CharField(source="study.case.code", read_only=True)
    study_role = serializers.CharField(source="study.role", read_only=True)

    class Meta:
        model = InferenceJob
        fields = [
            "id",
            "case",
            "study",
            "study_role",
            "pipeline_version",
            "status",
            "progress_step",
            "step_timings_s",
            "attempts",
            "run_count",
            "error_code",
            "error_message",
            "queued_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class PredictionSerializer(serializers.ModelSerializer[Prediction]):
    case = serializers.CharField(source="job.study.case.code", read_only=True)
    model = serializers.CharField(source="model_version.__str__", read_only=True)
    # Named "label" like the ground-truth and adjudication fields, so the schema has one enum.
    # The serializer metaclass removes declared fields from the class, so the stubs' Field.label
    # attribute is not overridden at run time.
    label = serializers.ChoiceField(  # type: ignore[assignment]
        source="predicted_label", choices=HyperdensityLabel.choices, read_only=True
    )

    class Meta:
        model = Prediction
        fields = [
            "id",
            "case",
            "job",
            "run_number",
            "model_version",
            "model",
            "label",
            "probabilities",
            "is_uncertain",
            "runtime_s",
            "created_at",
        ]
        read_only_fields = fields


class GroundTruthSerializer(serializers.ModelSerializer[GroundTruth]):
    case = serializers.SlugRelatedField(slug_field="code", queryset=Case.objects.all())
    expected_version = serializers.IntegerField(write_only=True, min_value=0)

    class Meta:
        model = GroundTruth
        fields = [
            "id",
            "case",
            "version",
            "label",
            "heidelberg_subtype",
            "source",
            "notes",
            "entered_at",
            "expected_version",
        ]
        read_only_fields = ["id", "version", "source", "entered_at"]


class AdjudicationSerializer(serializers.ModelSerializer[Adjudication]):
    case = serializers.CharField(source="case.code", read_only=True)
    reader = serializers.SerializerMethodField()

    class Meta:
        model = Adjudication
        fields = [
            "id",
            "case",
            "reader",
            "version",
            "is_consensus",
            "label",
            "confidence",
            "model_shown",
            "created_at",
        ]
        read_only_fields = fields

    def get_reader(self, adjudication: Adjudication) -> str:
        """Return the pseudonymous reader code ``reader_<user id>``."""
        return f"reader_{adjudication.reader_id}"


CASE_PARAMETER = OpenApiParameter("case", str, description="Only rows of this case code.")


class _CaseFilterMixin(ErrorBodyMixin):
    case_path = "case__code"

    def filter_by_case(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        request: Request = self.request  # type: ignore[attr-defined]
        code = request.query_params.get("case")
        return queryset.filter(**{self.case_path: code}) if code else queryset


@extend_schema(parameters=[CASE_PARAMETER])
class StudyViewSet(_CaseFilterMixin, viewsets.ReadOnlyModelViewSet[Study]):
    """DICOM studies of cases (pseudonymous identifiers only)."""

    serializer_class = StudySerializer

    def get_queryset(self) -> QuerySet[Study]:
        return self.filter_by_case(Study.objects.select_related("case").order_by("pk"))


class ModelVersionViewSet(ErrorBodyMixin, viewsets.ReadOnlyModelViewSet[ModelVersion]):
    """Registered model versions with their parameters, metrics and promotion state."""

    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.order_by("kind", "version", "pk")


@extend_schema(parameters=[CASE_PARAMETER])
class JobViewSet(_CaseFilterMixin, viewsets.ReadOnlyModelViewSet[InferenceJob]):
    """Inference jobs: state, step timings and errors; no predictions, so readers may list them."""

    serializer_class = JobSerializer
    case_path = "study__case__code"

    def get_queryset(self) -> QuerySet[InferenceJob]:
        jobs = InferenceJob.objects.select_related("study__case").order_by("pk")
        return self.filter_by_case(jobs)


@extend_schema(parameters=[CASE_PARAMETER])
class PredictionViewSet(_CaseFilterMixin, viewsets.ReadOnlyModelViewSet[Prediction]):
    """Model predictions; blinded cases are hidden from readers until they label them."""

    serializer_class = PredictionSerializer
    case_path = "job__study__case__code"

    def get_queryset(self) -> QuerySet[Prediction]:
        predictions = (
            Prediction.objects.select_related("job__study__case", "model_version")
            .filter(visible_cases_filter(self.request.user, "job__study__case"))
            .order_by("pk")
        )
        return self.filter_by_case(predictions)


@extend_schema(parameters=[CASE_PARAMETER])
class GroundTruthViewSet(
    _CaseFilterMixin,
    mixins.CreateModelMixin,
    viewsets.ReadOnlyModelViewSet[GroundTruth],
):
    """Ground-truth versions; POST appends a version (coordinator, reader or admin)."""

    serializer_class = GroundTruthSerializer

    def get_queryset(self) -> QuerySet[GroundTruth]:
        truths = (
            GroundTruth.objects.select_related("case")
            .filter(visible_cases_filter(self.request.user))
            .order_by("case__code", "version")
        )
        return self.filter_by_case(truths)

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        context = ClientContext(self.request.user, client_address_from_request(self.request))  # type: ignore[arg-type]
        serializer.instance = record_ground_truth(
            context,
            data["case"],
            label=data["label"],
            heidelberg_subtype=data.get("heidelberg_subtype", ""),
            notes=data.get("notes", ""),
            expected_version=data["expected_version"],
        )


@extend_schema(parameters=[CASE_PARAMETER])
class AdjudicationViewSet(_CaseFilterMixin, viewsets.ReadOnlyModelViewSet[Adjudication]):
    """Reader and consensus adjudications, every version; readers see others' only after their own."""

    serializer_class = AdjudicationSerializer

    def get_queryset(self) -> QuerySet[Adjudication]:
        if getattr(self, "swagger_fake_view", False):
            # Schema generation runs without a user, so the blinding filter cannot apply.
            return Adjudication.objects.none()
        user = self.request.user
        rows = Adjudication.objects.select_related("case").filter(
            visible_cases_filter(user) | Q(reader=user)
        )
        return self.filter_by_case(rows.order_by("case__code", "reader_id", "version"))


class ExportView(ErrorBodyMixin, APIView):
    """One export table as JSON (cases, lesions or the data dictionary); audited like downloads."""

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=list(exports.KINDS)),
            OpenApiParameter(
                "split",
                str,
                enum=list(Case.Split.values),
                description="Only cases of this cohort split; all cases when absent.",
            ),
        ],
        # One JSON object per row (case, lesion, or column of the data dictionary).
        responses={
            200: OpenApiResponse(
                response={
                    "type": "array",
                    "items": {"type": "object", "additionalProperties": True},
                },
                description="The export's rows.",
            )
        },
    )
    def get(self, request: Request, kind: str) -> Response:
        if kind not in exports.KINDS:
            raise exceptions.NotFound(f"No export {kind!r}; use one of {', '.join(exports.KINDS)}.")
        split = request.query_params.get("split") or None
        if split is not None and split not in Case.Split.values:
            raise exceptions.ValidationError(
                f"Split {split!r} is not one of {', '.join(Case.Split.values)}."
            )
        if not roles.has_any_role(request.user, *exports.EXPORT_ROLES):
            raise exceptions.PermissionDenied(
                f"Exports need one of the roles {', '.join(exports.EXPORT_ROLES)}."
            )
        context = ClientContext(request.user, client_address_from_request(request))  # type: ignore[arg-type]
        text, _rows = exports.export_dataset(context, kind=kind, export_format="json", split=split)
        return Response(json.loads(text))
