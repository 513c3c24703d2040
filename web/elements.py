"""folium extras: a call into guatu's own JavaScript, with data passed only through `|tojson`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import Template

from branca.element import MacroElement


class JsCall(MacroElement):
    """Render `FUNCTION(<parent>, <other Leaflet objects…>, OPTIONS)` in the page's script.

    FUNCTION is one of guatu's own entry points (never user text); OPTIONS reach the page
    only as JSON, so feature text can never become markup or script.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        {{ this.function }}({{ this._parent.get_name() }},
            {%- for name in this.names %} {{ name }},{% endfor %} {{ this.options|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, function: str, options: dict[str, Any], names: Sequence[str] = ()) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # branca leaves __init__ unannotated
        self._name = "GuatuJsCall"
        self.function = function
        self.names = list(names)
        self.options = options
