"""``/dashboard``: an operator's view of the queues, in the browser, served by the API itself.
No build step and nothing from outside: a page, one script and one stylesheet from
``static/``, and the JSON of ``overview.py``; everything else the page does goes through the
API's own routes (the task listing, ``GET``/``PATCH /tasks/{id}``) with the caller's token."""
