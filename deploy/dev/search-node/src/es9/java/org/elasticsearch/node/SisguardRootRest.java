/* sisguard dev/test: Elasticsearch 9.x binding of SisguardRootPlugin (GET / and HEAD /). */
package org.elasticsearch.node;

import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.rest.RestHandler;

import java.util.Collection;
import java.util.function.Predicate;
import java.util.function.Supplier;

public class SisguardRootRest extends SisguardRootPlugin {
    @Override
    public Collection<RestHandler> getRestHandlers(
        RestHandlersServices restHandlersServices,
        Supplier<DiscoveryNodes> nodesInCluster,
        Predicate<NodeFeature> clusterSupportsFeature
    ) {
        return rootHandlers();
    }
}
