"""Forms for adjudication, consensus and ground truth; each carries the version the user edited."""

from __future__ import annotations

from django import forms

from webapp.core.models import HeidelbergSubtype, HyperdensityLabel

AGREEMENT_CHOICES = [("", "Not stated"), ("yes", "Yes"), ("no", "No")]


class AdjudicationForm(forms.Form):
    label = forms.ChoiceField(choices=HyperdensityLabel.choices, widget=forms.RadioSelect)
    confidence = forms.IntegerField(min_value=1, max_value=5, help_text="1 (guess) to 5 (certain).")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    agrees_with_model = forms.ChoiceField(
        choices=AGREEMENT_CHOICES,
        required=False,
        label="Agrees with the model",
        help_text="Whether your label matches the model's prediction, once it is shown.",
    )
    # The version the form was rendered from; a newer stored version makes the edit stale.
    expected_version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)

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
