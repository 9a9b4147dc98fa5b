"""The only modules that send anything: drivers for requests and httpx.

`httpx_sender.py` sends token requests (sync and async); `httpx.py` signs httpx requests
(one flow, two drivers; the departure hook) and `requests.py` signs requests' requests. Both
make the same decisions through `_signing.py`; `_admission.py` is the async client's gate.
"""
