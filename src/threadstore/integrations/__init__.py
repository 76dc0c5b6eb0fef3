"""Adapters that plug threadstore into other ecosystems' storage interfaces.

- ``threadstore.integrations.keyvalue.ThreadstoreStore``: a py-key-value ``AsyncKeyValue`` store
  (FastMCP's storage layer); needs ``pip install 'threadstore[keyvalue]'``.
- ``threadstore.integrations.agents.ThreadstoreSession``: an OpenAI Agents SDK ``Session``;
  needs ``pip install 'threadstore[agents]'``.

Nothing is imported here, so ``import threadstore`` never pulls either ecosystem in.
"""
