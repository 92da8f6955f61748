-- From this release on, merge state and device records are kept only where the app's rows and the raw
-- records cannot say them (#17): a live logbook row whose document holds its edit time has no
-- recovery_entity_state row, and a device's raw record of a key is its device record. A release before
-- this one would misread such a database (a twin of a row without state inserted as a row of its own, a
-- device's records counted again), and this migration's number makes it refuse the database instead.

-- What each device has sent: the keys of its raw records, and its device rows (byte-identical copies of
-- what another device sent first, and records not kept raw, such as quarantined ones).
CREATE VIEW recovery_device_sent AS
  SELECT user_id, device_id, entity_type, entity_id FROM recovery_raw_records WHERE device_id IS NOT NULL
  UNION
  SELECT user_id, device_id, entity_type, entity_id FROM recovery_device_records;
