"""fleetscan: check the online status of very large fleets of MQTT devices on
Alibaba Cloud ApsaraMQ for MQTT, paced under the API's limits."""

__version__ = "0.1.0"
