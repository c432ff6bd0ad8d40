-- docker-compose lab, FLAVOR=percona: users on the Percona Server 8.0 primary.
-- LAB-ONLY CREDENTIALS. Written to the binlog on purpose: the replica starts
-- from an empty GTID set and replays this (SOURCE_AUTO_POSITION), so both
-- servers get the same users and data.
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-secret';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER 'remora'@'%' IDENTIFIED BY 'remora-secret';
-- Everything remora needs on MySQL 8 (see the README's Privileges).
GRANT REPLICATION CLIENT ON *.* TO 'remora'@'%';
GRANT SELECT ON performance_schema.* TO 'remora'@'%';
GRANT SELECT ON heartbeat.* TO 'remora'@'%';
CREATE DATABASE lab;
CREATE TABLE lab.ticks (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE lab.conflict (id INT PRIMARY KEY);
