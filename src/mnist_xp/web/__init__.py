"""``mnist-xp serve``: the drawing page (``index.html``) and its JSON API (``server``)."""
