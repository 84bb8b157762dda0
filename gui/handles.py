"""Typed handles around DearPyGui items (viser's handle pattern): panels hold these, not raw string tags.

Only the main thread may call these (DearPyGui is not thread-safe).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.imaging import as_float_rgb, resize

__all__ = ["RawTexture", "Text", "themed_colour"]


class RawTexture:
    """A fixed-size float RGB raw texture; :meth:`set` copies an image into its contiguous buffer.

    Images of another size are resized (bilinear). The buffer stays the same object, as DearPyGui
    keeps a pointer to it; it must be C-contiguous float32 or DearPyGui crashes.
    """

    def __init__(self, registry: int | str, width: int, height: int, fill: float = 0.12) -> None:
        self.width, self.height = int(width), int(height)
        self.buffer = np.full((self.height, self.width, 3), fill, dtype=np.float32)
        self.tag = dpg.add_raw_texture(
            self.width, self.height, self.buffer, format=dpg.mvFormat_Float_rgb, parent=registry
        )
        self.version = 0

    def set(self, image: Any) -> None:
        image = as_float_rgb(image)
        if image.shape[:2] != (self.height, self.width):
            image = resize(image, self.height, self.width)
        np.copyto(self.buffer, image)
        dpg.set_value(self.tag, self.buffer)
        self.version += 1

    def clear(self, value: float = 0.12) -> None:
        self.buffer.fill(value)
        dpg.set_value(self.tag, self.buffer)


class Text:
    """A text item whose value is only pushed to DearPyGui when it changed."""

    def __init__(
        self, default: str = "", parent: Optional[int | str] = None, colour: Optional[tuple] = None, wrap: int = -1
    ) -> None:
        kwargs: dict = {"wrap": wrap}
        if parent is not None:
            kwargs["parent"] = parent
        if colour is not None:
            kwargs["color"] = colour
        self.tag = dpg.add_text(default, **kwargs)
        self._value = default

    def set(self, value: str, colour: Optional[tuple] = None) -> None:
        if value != self._value:
            dpg.set_value(self.tag, value)
            self._value = value
        if colour is not None:
            dpg.configure_item(self.tag, color=colour)

    @property
    def value(self) -> str:
        return self._value


def themed_colour(
    target: int, colour: tuple, component: int = 0, style: Optional[Callable[[], None]] = None, category: int = 0
) -> int:
    """A theme setting one colour (``target`` is a dpg.mvThemeCol_* / mvPlotCol_* constant)."""
    with dpg.theme() as theme:
        with dpg.theme_component(component):
            dpg.add_theme_color(target, colour, category=category)
            if style is not None:
                style()
    return theme
