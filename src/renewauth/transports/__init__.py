"""The only modules that send anything: drivers for requests and httpx.

`httpx.py` sends token requests (sync and async) and signs httpx requests; `requests.py`
signs requests' requests. Both make the same decisions through `_signing.py`.
"""
