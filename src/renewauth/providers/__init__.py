"""Providers: one small class per vendor API, each a `TokenAuth` with its flow and dialect.

```python
from renewauth.providers import Keycloak, OrderCloud, Shopware, Vendorlink, VanMarcke
```

`ServiceUser` is what `VanMarcke.create_service_user` returns.
"""

from __future__ import annotations

from .keycloak import Keycloak
from .ordercloud import OrderCloud
from .shopware import Shopware
from .vanmarcke import ServiceUser, VanMarcke
from .vendorlink import Vendorlink

__all__ = ["Keycloak", "OrderCloud", "ServiceUser", "Shopware", "VanMarcke", "Vendorlink"]
