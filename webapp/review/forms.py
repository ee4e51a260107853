"""Forms for adjudication, consensus and ground truth; each carries the version the user edited."""

from __future__ import annotations

from typing import Any

from django import forms

from webapp.core.models import HeidelbergSubtype, HyperdensityLabel

AGREEMENT_CHOICES = [("", "Not stated"), ("yes", "Yes"), ("no", "No")]


class AdjudicationForm(forms.Form):
    """A reader's label or the consensus label.

    ``compared`` is the prediction the agreement question refers to (see
    ``services.compared_prediction``). Without it, because the reader is still blinded or no
    model has run, the form has no agreement question at all.
    """

    label = forms.ChoiceField(choices=HyperdensityLabel.choices, widget=forms.RadioSelect)
    # Required with no initial value: a default would be stored as the reader's own choice.
    confidence = forms.IntegerField(
        min_value=1,
        max_value=5,
        help_text="Required: 1 (guess) to 5 (certain).",
        error_messages={"required": "Choose a confidence from 1 (guess) to 5 (certain)."},
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    agrees_with_model = forms.ChoiceField(choices=AGREEMENT_CHOICES, required=False)
    # The model version the agreement question named when the form was rendered.
    compared_model_version = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # The version the form was rendered from; a newer stored version makes the edit stale.
    expected_version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)

    def __init__(
        self,
        *args: Any,
        compared: dict[str, Any] | None = None,
        consensus: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.compared = compared
        # Both forms can sit on one page, so their fields get distinct accessible names.
        owner = "Consensus" if consensus else "Your"
        self.fields["label"].label = f"{owner} label"
        self.fields["confidence"].label = f"{owner} confidence"
        self.fields["notes"].label = f"{owner} notes"
        if compared is None:
            del self.fields["agrees_with_model"]
            del self.fields["compared_model_version"]
            return
        subject = "the consensus label" if consensus else "your label"
        self.fields[
            "agrees_with_model"
        ].label = f"Does {subject} agree with {compared['model']} on the post-procedure CT?"
        self.fields[
            "agrees_with_model"
        ].help_text = f"{compared['model']} predicted {compared['label']}."
        self.fields["compared_model_version"].initial = compared["modelVersionId"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.compared is None or not cleaned.get("agrees_with_model"):
            return cleaned
        if cleaned.get("compared_model_version") != self.compared["modelVersionId"]:
            self.add_error(
                "agrees_with_model",
                "The compared model changed after this page was loaded (a new analysis or "
                "promotion); reload the page and answer again.",
            )
        return cleaned

    def agreement(self) -> bool | None:
        value = self.cleaned_data.get("agrees_with_model")
        return {"yes": True, "no": False}.get(value or "")


class GroundTruthForm(forms.Form):
    label = forms.ChoiceField(choices=HyperdensityLabel.choices, widget=forms.RadioSelect)
    heidelberg_subtype = forms.ChoiceField(
        choices=[("", "Not classified"), *HeidelbergSubtype.choices],
        required=False,
        label="Heidelberg subtype",
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    expected_version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)
