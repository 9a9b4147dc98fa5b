"""Providers: one small class per vendor API, each a `TokenAuth` with its flow and dialect.

```python
from renewauth.providers import Keycloak, OrderCloud, Shopware, Vendorlink, VanMarcke
```
"""

from __future__ import annotations

from .keycloak import Keycloak
from .ordercloud import OrderCloud
from .shopware import Shopware
from .vanmarcke import VanMarcke
from .vendorlink import Vendorlink

__all__ = ["Keycloak", "OrderCloud", "Shopware", "VanMarcke", "Vendorlink"]
