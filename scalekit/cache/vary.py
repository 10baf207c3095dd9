"""Values of Vary'd request headers, normalised where the RFCs say two spellings mean the same.

RFC 9111 §4.1: the selecting header fields match when the request's can be transformed into the
stored request's "by adding or removing whitespace, where allowed in the header field's syntax;
combining multiple header field lines ...; or normalizing both header field values in a way
that is known to have identical semantics, according to the header field's specification (e.g.,
reordering field values when order is not significant; case-normalization, where values are
defined to be case-insensitive)". So equal variants share one entry, and nothing that could
make an app answer differently is merged:

- the ``Accept`` family (RFC 9110 §12.5): list members with the whitespace around ``,``, ``;``
  and ``=`` removed, empty members dropped, case folded where the grammar says it does not
  matter (media types, content codings, charsets, language tags, parameter names), and a weight
  written canonically (``q=1.0`` is no weight at all, ``q=0.50`` is ``q=0.5``);
- ``Accept-Encoding`` members sorted by coding: preference is carried by weights alone
  (RFC 9110 §12.5.3), never by order. The other Accept fields keep their order, which
  frameworks use to break ties between equal weights;
- a value holding a quoted string, and every other header (Cookie, User-Agent, ...), only
  loses the whitespace at its ends (RFC 9110 §5.5: it is not part of the value).

>>> normalise_vary_value("accept-encoding", "br;q=1.0 , GZIP;q=0.50,,")
'br,gzip;q=0.5'
>>> normalise_vary_value("accept-language", "fr-CH, EN;q=0.8")
'fr-ch,en;q=0.8'
>>> normalise_vary_value("user-agent", " Foo (a, b) ")
'Foo (a, b)'
"""

from __future__ import annotations

import re

from ..memo import TextMemo

__all__ = ["normalise_vary_value"]

# Case-insensitive list fields, and whether their order carries meaning.
_ACCEPT_FIELDS = {"accept": False, "accept-charset": False, "accept-language": False,
                  "accept-encoding": True}
# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_MEMOS = {name: TextMemo[str](max_entries=1024, max_text_chars=512) for name in _ACCEPT_FIELDS}


def normalise_vary_value(name: str, value: str) -> str:
    """``value`` of request header ``name`` (lower-case) in the form that equal values share."""
    sortable = _ACCEPT_FIELDS.get(name)
    if sortable is None or '"' in value:
        return value.strip()
    memo = _MEMOS[name]
    found = memo.get(value)
    if found is None:
        members = [_member(part) for part in value.split(",")]
        members = [member for member in members if member]
        if sortable:
            members.sort(key=lambda member: member.partition(";")[0])
        found = ",".join(members)
        memo.put(value, found)
    return found


def _member(text: str) -> str:
    """One list member: ``token [ ; name=value ]*`` with whitespace and case normalised."""
    head, *parameters = text.split(";")
    parts = [head.strip().lower()]
    for parameter in parameters:
        key, equals, argument = parameter.partition("=")
        key = key.strip().lower()
        argument = argument.strip()
        if not key and not argument:
            continue  # an empty parameter: "text/html;"
        if key == "q" and _QVALUE.fullmatch(argument):
            weight = float(argument)
            if weight == 1.0:
                continue  # the default weight (RFC 9110 §12.4.2)
            argument = f"{weight:g}"
        parts.append(f"{key}{equals}{argument}")
    return ";".join(parts) if parts[0] or len(parts) > 1 else ""
