"""Coded terminology of segments: what a label *is*, in codes any DICOM viewer understands.

A label's name ("Liver") is free text; DICOM SEG and Slicer describe a segment by a coded
*category* and *type* (SNOMED CT, e.g. Tissue / Liver), optionally a type modifier (left/right)
and an anatomic region. One :class:`SegmentTerminology` per label travels from the optional
``terminology`` block of ``dataset.json`` into the model file, and from there into DICOM SEG
segment descriptions and Slicer's segment terminology tag.

``dataset.json`` accepts, per label value, dcmqi's key names (as in its ``seg-example.json``)
or short ones::

    "terminology": {"1": {"category": {"CodingSchemeDesignator": "SCT", "CodeValue": "85756007",
                                       "CodeMeaning": "Tissue"},
                          "type": {"CodingSchemeDesignator": "SCT", "CodeValue": "10200004",
                                   "CodeMeaning": "Liver"}}}

(``SegmentedPropertyCategoryCodeSequence`` / ``SegmentedPropertyTypeCodeSequence`` /
``SegmentedPropertyTypeModifierCodeSequence`` / ``AnatomicRegionSequence`` are the dcmqi names;
a code may also be written ``["SCT", "10200004", "Liver"]``.) A label without an entry gets a
generic code: category "Anatomical structure" (SCT 91723000) and a type in our private coding
scheme whose meaning is the label's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from AttentionSegLib.errors import AttentionSegError

__all__ = [
    "Code",
    "SegmentTerminology",
    "GENERIC_CATEGORY",
    "PRIVATE_SCHEME",
    "generic_terminology",
    "parse_terminology_block",
    "slicer_terminology_entry",
]

# "99" starts a private coding scheme designator (DICOM PS3.16 8.2): our label names are not codes.
PRIVATE_SCHEME = "99ATTNSEG"
GENERIC_CATEGORY_CODE = ("SCT", "91723000", "Anatomical structure")
# Slicer's context name for codes that are not from one of its terminology lists.
SLICER_CONTEXT = "Segmentation category and type - AttentionSeg"
SLICER_REGION_CONTEXT = "Anatomic codes - DICOM master list"

_KEY_ALIASES = {
    "category": ("category", "SegmentedPropertyCategoryCodeSequence"),
    "type": ("type", "SegmentedPropertyTypeCodeSequence"),
    "modifier": ("modifier", "type_modifier", "SegmentedPropertyTypeModifierCodeSequence"),
    "region": ("region", "anatomic_region", "AnatomicRegionSequence"),
}


class Code(NamedTuple):
    """One coded concept: coding scheme designator, code value, code meaning."""

    scheme: str
    value: str
    meaning: str


GENERIC_CATEGORY = Code(*GENERIC_CATEGORY_CODE)


@dataclass(frozen=True)
class SegmentTerminology:
    """Category and type (required), type modifier and anatomic region (optional) of one segment."""

    category: Code
    type: Code
    modifier: Code | None = None
    region: Code | None = None

    def to_dict(self) -> dict[str, list[str]]:
        """As stored in model files: ``{"category": [scheme, value, meaning], ...}``."""
        fields = {"category": self.category, "type": self.type, "modifier": self.modifier, "region": self.region}
        return {key: list(code) for key, code in fields.items() if code is not None}

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], where: str = "terminology") -> SegmentTerminology:
        """Read either form (model file lists, or dataset.json objects with dcmqi or short keys)."""
        if not isinstance(content, Mapping):
            raise AttentionSegError(f"{where}: must be an object with 'category' and 'type' codes")
        codes: dict[str, Code | None] = {}
        for field, aliases in _KEY_ALIASES.items():
            raw = next((content[key] for key in aliases if key in content), None)
            codes[field] = None if raw is None else _code(raw, f"{where}.{field}")
        for required in ("category", "type"):
            if codes[required] is None:
                raise AttentionSegError(f"{where}: no '{required}' code")
        return cls(codes["category"], codes["type"], codes["modifier"], codes["region"])


def _code(raw: Any, where: str) -> Code:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], Mapping):
        raw = raw[0]  # dcmqi writes a sequence of one item in some files
    if isinstance(raw, Mapping):
        values = [raw.get(key) for key in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")]
    elif isinstance(raw, (list, tuple)) and len(raw) == 3:
        values = list(raw)
    else:
        raise AttentionSegError(
            f"{where}: a code is {{CodingSchemeDesignator, CodeValue, CodeMeaning}} or [scheme, value, meaning]"
        )
    if not all(isinstance(v, (str, int)) and str(v).strip() for v in values):
        raise AttentionSegError(f"{where}: scheme, value and meaning must be non-empty, got {values}")
    if any(c in str(v) for v in values for c in "~^|"):
        raise AttentionSegError(f"{where}: codes may not contain '~', '^' or '|', got {values}")
    return Code(*(str(v).strip() for v in values))


def generic_terminology(name: str, value: int) -> SegmentTerminology:
    """The code of a label nobody coded: 'Anatomical structure' / a private code meaning ``name``."""
    return SegmentTerminology(GENERIC_CATEGORY, Code(PRIVATE_SCHEME, f"L{int(value)}", str(name)[:64] or f"L{value}"))


def parse_terminology_block(raw: Any, label_values: set[int], where: str) -> dict[int, SegmentTerminology]:
    """``dataset.json``'s ``terminology`` block -> {label value: terminology}; keys are label values."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AttentionSegError(f"{where}: 'terminology' must map label values to codes")
    result = {}
    for key, entry in raw.items():
        try:
            value = int(key)
        except ValueError:
            raise AttentionSegError(f"{where}: terminology key {key!r} is not a label value") from None
        if value not in label_values or value == 0:
            raise AttentionSegError(f"{where}: terminology for label {value}, which is not a declared foreground label")
        result[value] = SegmentTerminology.from_dict(entry, f"{where}: terminology[{key!r}]")
    return result


def slicer_terminology_entry(terminology: SegmentTerminology) -> str:
    """The string Slicer keeps in a segment's ``TerminologyEntry`` tag (and in .seg.nrrd headers):
    ``context~scheme^value^meaning`` for category, type and modifier, then the anatomic context,
    region and region modifier. The format is Slicer's (vtkSlicerTerminologiesModuleLogic::
    SerializeTerminologyEntry); a test checks that both give the same string."""

    def triple(code: Code | None) -> str:
        return "^".join(code) if code is not None else "^^"

    region_context = SLICER_REGION_CONTEXT if terminology.region is not None else ""
    return "~".join(
        [
            SLICER_CONTEXT,
            triple(terminology.category),
            triple(terminology.type),
            triple(terminology.modifier),
            region_context,
            triple(terminology.region),
            triple(None),
        ]
    )
